"""Job records and their per-job event logs in Redis, and the one way events are appended."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from . import keys, metrics
from .errors import NotFound, TooManyRequests
from .models import EVENT_ADAPTER, Event, Job
from .queue import QueueEntry, enqueue_lua

# Appends one event atomically: the next sequence number is the log's length + 1, spliced into
# the event's JSON between `head` and `tail`; the job record is replaced; the event is published;
# its metrics are counted in the same step, so a scrape never counts an event that was not stored.
# Nothing is appended once the job is final, so a late writer (a cancelled worker, a retried run)
# can never add events after the final one.
# A retried call (the reply was lost, the script had run) finds its own event id in KEYS[6] and
# answers the seq it got the first time instead of appending the event twice.
# Creating a job counts a submission in its user's minute and fails with -2 over the rate limit,
# or with -1 when its user already has `limit` jobs not yet final; else it may queue the job's
# run in the same step, so that a job is never stored without being queued.
#   KEYS: job record, event log, final marker, jobs index, active jobs, last append,
#         finished jobs of the final status (for stats), the user's jobs, the user's active jobs,
#         the metrics hash, the user's submissions this minute, [the queue entry's 3 keys]
#   ARGV: head, tail, job JSON, is_final ("1"/"0"), ttl, channel, index score ("" = no index),
#         job id, event id (32 hex chars), now, the user's limit ("" = none), the per-minute
#         limit ("" = none), the queue entry's 5 arguments ("" × 5 = none), then (metric field,
#         amount) pairs; an amount with a "." or an exponent is a float
_APPEND = (
    """
local last = redis.call('GET', KEYS[6])
if last and string.sub(last, 1, 32) == ARGV[9] then return tonumber(string.sub(last, 34)) end
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
if ARGV[12] ~= '' then
  local count = redis.call('INCR', KEYS[11])
  redis.call('EXPIRE', KEYS[11], 120)
  if count > tonumber(ARGV[12]) then return -2 end
end
if ARGV[11] ~= '' and redis.call('ZCARD', KEYS[9]) >= tonumber(ARGV[11]) then return -1 end
local seq = redis.call('LLEN', KEYS[2]) + 1
redis.call('SET', KEYS[6], ARGV[9] .. ' ' .. seq, 'EX', tonumber(ARGV[5]))
local event = ARGV[1] .. seq .. ARGV[2]
local ttl = tonumber(ARGV[5])
redis.call('RPUSH', KEYS[2], event)
redis.call('EXPIRE', KEYS[2], ttl)
redis.call('SET', KEYS[1], ARGV[3], 'EX', ttl)
if ARGV[4] == '1' then
  redis.call('SET', KEYS[3], '1', 'EX', ttl)
  redis.call('ZREM', KEYS[5], ARGV[8])
  redis.call('ZREM', KEYS[9], ARGV[8])
  redis.call('ZADD', KEYS[7], ARGV[10], ARGV[8])
end
if ARGV[7] ~= '' then
  redis.call('ZADD', KEYS[4], ARGV[7], ARGV[8])
  redis.call('ZADD', KEYS[5], ARGV[7], ARGV[8])
  redis.call('ZADD', KEYS[8], ARGV[7], ARGV[8])
  redis.call('ZADD', KEYS[9], ARGV[7], ARGV[8])
  redis.call('EXPIRE', KEYS[8], ttl)
end
"""
    + f"if ARGV[13] ~= '' then {enqueue_lua(12, 13)} end"
    + """
for i = 18, #ARGV, 2 do
  if string.find(ARGV[i + 1], '[.eE]') then
    redis.call('HINCRBYFLOAT', KEYS[10], ARGV[i], ARGV[i + 1])
  else
    redis.call('HINCRBY', KEYS[10], ARGV[i], ARGV[i + 1])
  end
end
redis.call('PUBLISH', ARGV[6], event)
return seq
"""
)
_TOO_MANY_JOBS, _RATE_LIMITED = -1, -2

_SEQ_PLACEHOLDER = '"seq":0,'


def split_for_seq(event_json: str) -> tuple[str, str]:
    """Split an event's JSON around its (zero) sequence number: `head + str(seq) + tail`."""
    head, sep, tail = event_json.partition(_SEQ_PLACEHOLDER)
    if not sep:
        raise ValueError("event JSON has no seq placeholder")
    return head + '"seq":', "," + tail


@dataclass(frozen=True)
class Quota:
    """What one user may have: jobs not yet final, submissions in a minute (None: no limit)."""

    jobs: int | None = None
    per_minute: int | None = None


class JobStore:
    """Reads and writes jobs and their event logs; the only code that touches those keys."""

    def __init__(self, redis: Redis, *, ttl: int) -> None:
        self.redis = redis
        self.ttl = ttl
        self._append = redis.register_script(_APPEND)

    async def get(self, job_id: str) -> Job:
        raw = await self.redis.get(keys.job(job_id))
        if raw is None:
            raise NotFound(f"no job with id {job_id!r}", code="job_not_found")
        return Job.model_validate_json(raw)

    async def create(
        self,
        job: Job,
        event: Event,
        quota: Quota | None = None,
        queue: QueueEntry | None = None,
    ) -> int:
        """Store a new job with its first event, within its user's `quota`, and put `queue` (its
        run) on arq's queue in the same step.

        Over the quota, TooManyRequests says which limit, and nothing is written (but the
        submission counts against the rate: a client hammering a full quota stays limited).
        """
        quota = quota or Quota()
        now = time.time()
        seq = await self._write(job, event, quota=quota, queue=queue, now=now)
        if seq == _RATE_LIMITED:
            raise TooManyRequests(
                f"more than {quota.per_minute} submissions in a minute; try again shortly",
                retry_after=max(1, int(60 - now % 60)),
                code="rate_limited",
            )
        if seq == _TOO_MANY_JOBS:
            raise TooManyRequests(
                f"you already have {quota.jobs} jobs pending or running; wait for one to finish",
                retry_after=10,
                code="too_many_jobs",
            )
        return seq

    async def append(self, job: Job, event: Event) -> int:
        """Store `job` and append `event` (whose status and progress are taken from `job`).

        Returns the event's sequence number; 0 when the job was already final: nothing is
        written.
        """
        return await self._write(job, event, quota=None, queue=None, now=time.time())

    async def _write(
        self,
        job: Job,
        event: Event,
        *,
        quota: Quota | None,
        queue: QueueEntry | None,
        now: float,
    ) -> int:
        event.status = job.status
        event.progress = job.progress
        event.seq = 0
        head, tail = split_for_seq(event.model_dump_json())
        creating = quota is not None
        # counted here, once per job on every path, since nothing follows a final event
        counts = metrics.submitted_counts(job.workflow) if creating else []
        if job.is_final:
            counts += metrics.job_finished_counts(job)
        args: list[Any] = [
            head,
            tail,
            job.model_dump_json(),
            "1" if job.is_final else "0",
            self.ttl,
            keys.events_channel(job.id),
            repr(job.created_at) if creating else "",
            job.id,
            uuid.uuid4().hex,
            repr(now),
            _limit(quota.jobs if quota else None),
            _limit(quota.per_minute if quota else None),
            *(queue.args if queue else ("",) * 5),
        ]
        for field, amount in counts:
            args += [field, repr(amount)]
        job_keys = [keys.job(job.id), keys.job_events(job.id), keys.job_final(job.id)]
        index_keys = [
            keys.jobs_index(),
            keys.active_jobs(),
            keys.job_last_append(job.id),
            keys.finished(job.status if job.is_final else "done"),
            keys.user_jobs(job.user),
            keys.user_active(job.user),
            metrics.METRICS_KEY,
            keys.submission_window(job.user, int(now // 60)),
            *(queue.keys if queue else ()),
        ]
        seq = int(await self._append(keys=[*job_keys, *index_keys], args=args))
        event.seq = max(seq, 0)
        return seq

    async def events(self, job_id: str, after: int = 0, until: int = -1) -> list[str]:
        """Raw JSON of the events with seq in (after, until]; until=-1 means to the end."""
        stop = -1 if until < 0 else until - 1
        items: list[bytes | str] = await self.redis.lrange(  # type: ignore[misc]
            keys.job_events(job_id), after, stop
        )
        return [item.decode() if isinstance(item, bytes) else item for item in items]

    async def parsed_events(self, job_id: str, after: int = 0) -> list[Event]:
        return [EVENT_ADAPTER.validate_json(raw) for raw in await self.events(job_id, after)]

    async def page(
        self, *, user: str | None, status: str | None, limit: int, cursor: float | None
    ) -> tuple[list[Job], str | None]:
        """`user`'s jobs (everyone's for None) newest first, created before `cursor`, optionally
        only those with `status`.

        Returns the page and the cursor of the next one (None at the end).
        """
        found: list[Job] = []
        top: Any = f"({cursor!r}" if cursor is not None else "+inf"
        batch = max(limit, 50) if status else limit
        while len(found) < limit:
            index = keys.jobs_index() if user is None else keys.user_jobs(user)
            entries = await self.redis.zrevrangebyscore(
                index, top, "-inf", start=0, num=batch, withscores=True
            )
            for member, score in entries:
                top = f"({score!r}"
                raw = await self.redis.get(keys.job(member.decode()))
                if raw is None:
                    continue  # expired
                job = Job.model_validate_json(raw)
                if status is None or job.status == status:
                    found.append(job)
                    if len(found) == limit:
                        return found, repr(score)
            if len(entries) < batch:
                return found, None
        return found, None


def _limit(value: int | None) -> str:
    return "" if value is None else str(value)
