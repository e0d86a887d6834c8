"""Usage per user and UTC day: the jobs that ran on ComfyUI, their GPU-seconds and queue wait.

A job that ran adds its metrics, once, to a hash of its user for the UTC day it ended (see
`keys.usage`), and its user to that day's set; both expire after RETENTION_DAYS. What a user
used today is what their daily budget is held against.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from redis.asyncio import Redis

from ..models import Job, UsageDay, UsageTotals, now
from . import keys
from .connections import text
from .scripts import Script

DAY = 86400
#: how long a day's usage is kept, and the most days a report may cover
RETENTION_DAYS = 35
MAX_DAYS = 31
_TOTALS = ("jobs", "gpu_seconds", "queue_wait_seconds")
_BACKEND = "backend:"

# Counts a job once: the marker is taken first, so a retried call (its reply lost) or a job
# function run again after its job ended adds nothing. The extra arguments are (field, amount)
# pairs, every amount added with HINCRBYFLOAT.
_RECORD_KEYS = ("marker_key", "usage_key", "users_key")
_RECORD_ARGS = ("marker_ttl", "ttl", "user")
_RECORD = """
if not redis.call('SET', marker_key, '1', 'NX', 'EX', marker_ttl) then return 0 end
for i = first_extra_arg, #ARGV, 2 do
  redis.call('HINCRBYFLOAT', usage_key, ARGV[i], ARGV[i + 1])
end
redis.call('EXPIRE', usage_key, ttl)
redis.call('SADD', users_key, user)
redis.call('EXPIRE', users_key, ttl)
return 1
"""


def utc_day(ts: float) -> str:
    """The UTC day of a Unix time, as `YYYY-MM-DD`."""
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


def seconds_to_midnight(ts: float) -> int:
    """Whole seconds from `ts` to the next UTC midnight (at least 1): when a day's budget resets."""
    return max(1, int(DAY - ts % DAY))


def usage_counts(job: Job) -> dict[str, float]:
    """What a job that ran adds to its user's day: 1 job, its GPU-seconds and queue wait, and
    the same again under its backend's label."""
    metrics = job.metrics
    if metrics is None:
        return {}
    amounts = {
        "jobs": 1.0,
        "gpu_seconds": metrics.execution_seconds or 0.0,
        "queue_wait_seconds": metrics.queue_wait_seconds or 0.0,
    }
    counts = dict(amounts)
    if metrics.backend:
        counts.update({f"{_BACKEND}{metrics.backend}:{k}": v for k, v in amounts.items()})
    return counts


class UsageStore:
    """Adds finished jobs to their users' daily usage, and reads it back."""

    def __init__(self, redis: Redis, *, marker_ttl: int) -> None:
        self.redis = redis
        self.marker_ttl = marker_ttl
        self._record = Script(redis, _RECORD_KEYS, _RECORD_ARGS, _RECORD)

    async def record(self, job: Job) -> bool:
        """Count a final job that ran on ComfyUI on the day it ended; False when there is nothing
        to count or it was counted already."""
        counts = usage_counts(job)
        if not counts:
            return False
        day = utc_day(job.finished_at or now())
        added = await self._record(
            {
                "marker_key": keys.job_usage(job.id),
                "usage_key": keys.usage(day, job.user),
                "users_key": keys.usage_users(day),
            },
            {"marker_ttl": self.marker_ttl, "ttl": RETENTION_DAYS * DAY, "user": job.user},
            extra_args=[part for k, v in counts.items() for part in (k, f"{v:.6f}")],
        )
        return bool(added)

    async def gpu_seconds_today(self, user: str, at: float | None = None) -> float:
        """The GPU-seconds of `user`'s jobs that ended today (UTC)."""
        day = utc_day(now() if at is None else at)
        raw = await self.redis.hget(keys.usage(day, user), "gpu_seconds")  # type: ignore[misc]
        return float(raw) if raw is not None else 0.0

    async def report(
        self, *, user: str | None, days: int, backends: bool, at: float | None = None
    ) -> list[UsageDay]:
        """`user`'s totals (every user's, by user, for None) for the last `days` UTC days,
        today first; with `backends`, also by backend."""
        moment = now() if at is None else at
        dates = [utc_day(moment - n * DAY) for n in range(min(days, MAX_DAYS))]
        if user is None:
            async with self.redis.pipeline(transaction=False) as pipe:
                for day in dates:
                    pipe.smembers(keys.usage_users(day))
                members = await pipe.execute()
            users = {
                day: sorted(text(m) for m in found)
                for day, found in zip(dates, members, strict=True)
            }
        else:
            users = {day: [user] for day in dates}
        async with self.redis.pipeline(transaction=False) as pipe:
            for day in dates:
                for name in users[day]:
                    pipe.hgetall(keys.usage(day, name))
            hashes = iter(await pipe.execute())
        return [
            _day(day, {name: _fields(next(hashes)) for name in users[day]}, user is None, backends)
            for day in dates
        ]


def _day(
    day: str, by_user: Mapping[str, dict[str, float]], every_user: bool, with_backends: bool
) -> UsageDay:
    total = UsageTotals()
    users: dict[str, UsageTotals] = {}
    backends: dict[str, UsageTotals] = {}
    for name, fields in by_user.items():
        own, per_backend = _totals(fields)
        total.add(own)
        if own.jobs:
            users[name] = own
        for label, amounts in per_backend.items():
            backends.setdefault(label, UsageTotals()).add(amounts)
    return UsageDay(
        day=day,
        **total.model_dump(),
        users=users if every_user else None,
        backends=dict(sorted(backends.items())) if with_backends else None,
    )


def _totals(fields: Mapping[str, float]) -> tuple[UsageTotals, dict[str, UsageTotals]]:
    """A user's day hash: their totals, and their totals by backend."""
    own = UsageTotals()
    backends: dict[str, UsageTotals] = {}
    for name, amount in fields.items():
        target = own
        if name.startswith(_BACKEND):
            label, _, name = name[len(_BACKEND) :].rpartition(":")
            target = backends.setdefault(label, UsageTotals())
        if name == "jobs":
            target.jobs += round(amount)
        elif name in _TOTALS:
            setattr(target, name, getattr(target, name) + amount)
    return own, backends


def _fields(raw: Mapping[bytes | str, bytes | str]) -> dict[str, float]:
    return {text(k): float(v) for k, v in raw.items()}
