"""Job records, their event logs and previews in Redis, and the one way events are appended."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from redis.asyncio import Redis

from ..errors import JobNotFound, RateLimited, RedisUnavailable, TooManyJobs
from ..models import EVENT_ADAPTER, FINAL_STATUSES, Event, Job
from . import claims, counters, keys
from .appends import Append, JobAppends
from .connections import text
from .queue import ENQUEUE_ARGS, ENQUEUE_KEYS, ENQUEUE_LUA, NO_RUN, QueueEntry
from .scripts import Script

# Appends one event atomically: the next sequence number is the log's length + 1, spliced into
# the event's JSON between `head` and `tail`; the job record is replaced; the event is published;
# its metrics are counted in the same step, so a scrape never counts an event that was not stored.
# Nothing is appended once the job is final, so a late writer (a cancelled worker, a retried run)
# can never add events after the final one.
# A retried call (the reply was lost, the script had run) finds its own event id in `last_key`
# and answers the seq it got the first time instead of appending the event twice.
# Creating a job (`index_score` set) counts a submission in its user's minute and fails with -2
# over the rate limit, or with -1 when its user already has `user_limit` jobs not yet final; else
# it may queue the job's run in the same step, so that a job is never stored without being queued.
# A write with a `deadline_ms` (Redis's clock) that reaches Redis after it does nothing and
# answers -3: its caller has answered that it failed, so it must not happen later (a paused
# Redis runs what waited in its socket when it resumes).
# The extra arguments are (metric field, amount) pairs; an amount with a "." or an exponent is a
# float.
_APPEND_KEYS = (
    "job_key",
    "log_key",
    "final_key",
    "index_key",
    "active_key",
    "last_key",
    "finished_key",
    "user_jobs_key",
    "user_active_key",
    "metrics_key",
    "window_key",
    *ENQUEUE_KEYS,
)
_APPEND_ARGS = (
    "head",
    "tail",
    "job_json",
    "is_final",
    "ttl",
    "channel",
    "index_score",
    "job_id",
    "event_id",
    "now",
    "user_limit",
    "minute_limit",
    "deadline_ms",
    "expect_seq",
    *ENQUEUE_ARGS,
)
_APPEND = (
    """
local last = redis.call('GET', last_key)
if last and string.sub(last, 1, 32) == event_id then return tonumber(string.sub(last, 34)) end
if deadline_ms ~= '' then
  local t = redis.call('TIME')
  if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > tonumber(deadline_ms) then
    return -3
  end
end
if redis.call('EXISTS', final_key) == 1 then return 0 end
if expect_seq ~= '' and redis.call('LLEN', log_key) ~= tonumber(expect_seq) then return 0 end
if minute_limit ~= '' then
  local count = redis.call('INCR', window_key)
  redis.call('EXPIRE', window_key, 120)
  if count > tonumber(minute_limit) then return -2 end
end
if user_limit ~= '' and redis.call('ZCARD', user_active_key) >= tonumber(user_limit) then
  return -1
end
local seq = redis.call('LLEN', log_key) + 1
local expiry = tonumber(ttl)
redis.call('SET', last_key, event_id .. ' ' .. seq, 'EX', expiry)
local event = head .. seq .. tail
redis.call('RPUSH', log_key, event)
redis.call('EXPIRE', log_key, expiry)
redis.call('SET', job_key, job_json, 'EX', expiry)
if is_final == '1' then
  redis.call('SET', final_key, '1', 'EX', expiry)
  redis.call('ZREM', active_key, job_id)
  redis.call('ZREM', user_active_key, job_id)
  redis.call('ZADD', finished_key, now, job_id)
end
if index_score ~= '' then
  redis.call('ZADD', index_key, index_score, job_id)
  redis.call('ZADD', active_key, index_score, job_id)
  redis.call('ZADD', user_jobs_key, index_score, job_id)
  redis.call('ZADD', user_active_key, index_score, job_id)
  redis.call('EXPIRE', user_jobs_key, expiry)
end
"""
    + ENQUEUE_LUA
    + """
for i = first_extra_arg, #ARGV, 2 do
  if string.find(ARGV[i + 1], '[.eE]') then
    redis.call('HINCRBYFLOAT', metrics_key, ARGV[i], ARGV[i + 1])
  else
    redis.call('HINCRBY', metrics_key, ARGV[i], ARGV[i + 1])
  end
end
redis.call('PUBLISH', channel, event)
return seq
"""
)
_TOO_MANY_JOBS, _RATE_LIMITED, _TOO_LATE = -1, -2, -3
#: how often the difference between this clock and Redis's is measured again
CLOCK_CHECK = 300.0

_SEQ_PLACEHOLDER = '"seq":0,'

#: how long a job's latest preview is kept
PREVIEW_TTL = 3600


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


@dataclass(frozen=True)
class PreviewImage:
    """A job's latest live preview, as stored."""

    data: bytes
    content_type: str


class _Owner(BaseModel):
    """Just the owner of a job record (validating the whole record would be wasted work)."""

    user: str = ""


class _StatusOnly(BaseModel):
    status: str


class JobStore:
    """Reads and writes jobs, their event logs and previews: the only code that touches them."""

    def __init__(self, redis: Redis, *, ttl: int) -> None:
        self.redis = redis
        self.ttl = ttl
        self._append = Script(redis, _APPEND_KEYS, _APPEND_ARGS, _APPEND)
        self._create_claiming = claims.wrap(redis, _APPEND_KEYS, _APPEND_ARGS, _APPEND)
        self._appends: dict[str, JobAppends] = {}  # by job id: see `append_soon`
        self._clock_offset = 0.0  # Redis's clock minus ours, in seconds
        self._clock_checked = -CLOCK_CHECK

    async def _redis_time(self, t: float) -> float:
        """`t` (this machine's Unix time) on Redis's clock."""
        if time.monotonic() - self._clock_checked > CLOCK_CHECK:
            before = time.time()
            seconds, micros = await self.redis.time()
            after = time.time()
            self._clock_offset = seconds + micros / 1e6 - (before + after) / 2
            self._clock_checked = time.monotonic()
        return t + self._clock_offset

    async def get(self, job_id: str) -> Job:
        raw = await self.redis.get(keys.job(job_id))
        if raw is None:
            raise JobNotFound(f"no job with id {job_id!r}")
        return Job.model_validate_json(raw)

    async def owner(self, job_id: str) -> str | None:
        """The user the job belongs to; None when there is no such job."""
        raw = await self.redis.get(keys.job(job_id))
        return _Owner.model_validate_json(raw).user if raw is not None else None

    async def create(
        self,
        job: Job,
        event: Event,
        quota: Quota | None = None,
        queue: QueueEntry | None = None,
        *,
        deadline: float | None = None,
        claiming: claims.Claims | None = None,
    ) -> int:
        """Store a new job with its first event, within its user's `quota`, and put `queue` (its
        run) on arq's queue in the same step; not at all if it reaches Redis after `deadline`
        (Unix time), which raises RedisUnavailable. With `claiming`, what it claims is checked
        first and taken with it (see `claims`: it may raise DuplicateSubmission instead).

        Over the quota, TooManyRequests says which limit, and nothing is written (but the
        submission counts against the rate: a client hammering a full quota stays limited).
        """
        quota = quota or Quota()
        now = time.time()
        seq = await self._write(
            job, event, quota=quota, queue=queue, now=now, deadline=deadline, claiming=claiming
        )
        if seq == _RATE_LIMITED:
            raise RateLimited(
                f"more than {quota.per_minute} submissions in a minute; try again shortly",
                retry_after=max(1, int(60 - now % 60)),
            )
        if seq == _TOO_MANY_JOBS:
            raise TooManyJobs(
                f"you already have {quota.jobs} jobs pending or running; wait for one to finish",
                retry_after=10,
            )
        return seq

    async def append(
        self,
        job: Job,
        event: Event,
        *,
        deadline: float | None = None,
        expect_seq: int | None = None,
    ) -> int:
        """Store `job` and append `event` (whose status and progress are taken from `job`).

        Returns the event's sequence number; 0 when the job was already final, or when its log
        no longer has `expect_seq` events (another event came first): nothing is written. A
        `deadline` works as for `create`.
        """
        deadline_ms = None if deadline is None else int(await self._redis_time(deadline) * 1000)
        return await self.append_soon(job, event, deadline_ms=deadline_ms, expect_seq=expect_seq)

    def append_soon(
        self,
        job: Job,
        event: Event,
        *,
        deadline_ms: int | None = None,
        expect_seq: int | None = None,
    ) -> asyncio.Future[int]:
        """`append`, taken now (`job` and `event` as they are) but written behind the job's
        earlier appends, without waiting: the future holds the seq (see `store.appends`)."""
        append = self._prepare(
            job,
            event,
            quota=None,
            queue=None,
            now=time.time(),
            deadline_ms=deadline_ms,
            expect_seq=expect_seq,
        )
        appends = self._appends.get(job.id)
        if appends is None:
            appends = JobAppends(self.redis, lambda: self._forget(job.id))
            self._appends[job.id] = appends
        return appends.push(append)

    async def get_with_seq(self, job_ids: list[str]) -> list[tuple[Job, int] | None]:
        """Each job as stored with the number of its events, read together (for a write that
        must not land after another one, see `append`); None for a job that is gone."""
        async with self.redis.pipeline(transaction=True) as pipe:
            for job_id in job_ids:
                pipe.get(keys.job(job_id))
                pipe.llen(keys.job_events(job_id))
            answers = await pipe.execute()
        found: list[tuple[Job, int] | None] = []
        for raw, seq in zip(answers[::2], answers[1::2], strict=True):
            found.append(None if raw is None else (Job.model_validate_json(raw), int(seq)))
        return found

    def _forget(self, job_id: str) -> None:
        del self._appends[job_id]

    async def _write(
        self,
        job: Job,
        event: Event,
        *,
        quota: Quota,
        queue: QueueEntry | None,
        now: float,
        deadline: float | None = None,
        claiming: claims.Claims | None = None,
    ) -> int:
        deadline_ms = None if deadline is None else int(await self._redis_time(deadline) * 1000)
        append = self._prepare(
            job,
            event,
            quota=quota,
            queue=queue,
            now=now,
            deadline_ms=deadline_ms,
            claiming=claiming,
        )
        return append.settle(await append.script.run(append.args))

    def _prepare(
        self,
        job: Job,
        event: Event,
        *,
        quota: Quota | None,
        queue: QueueEntry | None,
        now: float,
        deadline_ms: int | None,
        claiming: claims.Claims | None = None,
        expect_seq: int | None = None,
    ) -> Append:
        """The script call that writes `job` and appends `event`, as they are now."""
        event.status = job.status
        event.progress = job.progress
        event.seq = 0
        head, tail = split_for_seq(event.model_dump_json())
        creating = quota is not None
        # counted here, once per job on every path, since nothing follows a final event
        counts = counters.submitted_counts(job.workflow) if creating else []
        if job.is_final:
            counts += counters.job_finished_counts(job)
        run = queue or NO_RUN
        script_keys = {
            "job_key": keys.job(job.id),
            "log_key": keys.job_events(job.id),
            "final_key": keys.job_final(job.id),
            "index_key": keys.jobs_index(),
            "active_key": keys.active_jobs(),
            "last_key": keys.job_last_append(job.id),
            "finished_key": keys.finished(job.status if job.is_final else "done"),
            "user_jobs_key": keys.user_jobs(job.user),
            "user_active_key": keys.user_active(job.user),
            "metrics_key": keys.METRICS,
            "window_key": keys.submission_window(job.user, int(now // 60)),
            **run.keys,
        }
        script_args = {
            "head": head,
            "tail": tail,
            "job_json": job.model_dump_json(),
            "is_final": "1" if job.is_final else "0",
            "ttl": self.ttl,
            "channel": keys.events_channel(job.id),
            "index_score": repr(job.created_at) if creating else "",
            "job_id": job.id,
            "event_id": uuid.uuid4().hex,
            "now": repr(now),
            "user_limit": _limit(quota.jobs if quota else None),
            "minute_limit": _limit(quota.per_minute if quota else None),
            "deadline_ms": "" if deadline_ms is None else deadline_ms,
            "expect_seq": "" if expect_seq is None else expect_seq,
            **run.args,
        }
        metric_args = [part for field, amount in counts for part in (field, repr(amount))]
        script = self._append
        if claiming is not None:
            script = self._create_claiming
            script_keys.update(claiming.keys)
            script_args.update(claiming.args)

        def settle(reply: Any) -> int:
            seq = claims.settled(reply)
            if seq == _TOO_LATE:
                raise RedisUnavailable("Redis answered too late; nothing was done: try again")
            event.seq = max(seq, 0)
            return seq

        return Append(script, script.flat(script_keys, script_args, extra_args=metric_args), settle)

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
        self,
        *,
        user: str | None,
        status: str | None,
        limit: int,
        cursor: float | None,
        where: Callable[[Job], bool] | None = None,
    ) -> tuple[list[Job], str | None]:
        """`user`'s jobs (everyone's for None) newest first, created before `cursor`, optionally
        only those with `status` (and those `where` keeps).

        Returns the page and the cursor of the next one (None at the end).
        """
        found: list[Job] = []
        top: Any = f"({cursor!r}" if cursor is not None else "+inf"
        batch = max(limit, 50) if status or where else limit
        index = keys.jobs_index() if user is None else keys.user_jobs(user)
        while len(found) < limit:
            entries = await self.redis.zrevrangebyscore(
                index, top, "-inf", start=0, num=batch, withscores=True
            )
            for member, score in entries:
                top = f"({score!r}"
                raw = await self.redis.get(keys.job(text(member)))
                if raw is None:
                    continue  # expired
                job = Job.model_validate_json(raw)
                if (status is None or job.status == status) and (where is None or where(job)):
                    found.append(job)
                    if len(found) == limit:
                        return found, repr(score)
            if len(entries) < batch:
                return found, None
        return found, None

    # --- what recovery, stats and retention read -------------------------------------------------

    async def unfinished(self, limit: int = 1000) -> AsyncIterator[Job]:
        """The jobs not yet final, oldest first; entries of final or expired ones are dropped."""
        for member in await self.redis.zrange(keys.active_jobs(), 0, limit - 1):
            job_id = text(member)
            raw = await self.redis.get(keys.job(job_id))
            job = Job.model_validate_json(raw) if raw is not None else None
            if job is None or job.is_final:
                await self.redis.zrem(keys.active_jobs(), job_id)
            else:
                yield job

    async def unfinished_counts(self, batch: int = 500) -> dict[str, int]:
        """How many jobs are pending and how many processing (O(unfinished jobs))."""
        counts = {"pending": 0, "processing": 0}
        members = await self.redis.zrange(keys.active_jobs(), 0, -1)
        for start in range(0, len(members), batch):
            chunk = [keys.job(text(m)) for m in members[start : start + batch]]
            for raw in await self.redis.mget(chunk):
                if raw is None:
                    continue  # expired, or finished since the ZRANGE
                status = _StatusOnly.model_validate_json(raw).status
                if status in counts:
                    counts[status] += 1
        return counts

    async def finished_since(self, since: float) -> dict[str, int]:
        """How many jobs reached each final status since `since` (Unix time; a day at most)."""
        return {
            status: int(await self.redis.zcount(keys.finished(status), since, "+inf"))
            for status in sorted(FINAL_STATUSES)
        }

    async def forget_before(self, cutoff: float, finished_cutoff: float) -> int:
        """Drop listing entries of jobs created before `cutoff` (their records have expired) and
        stats entries of jobs finished before `finished_cutoff`; return how many jobs left the
        listing."""
        removed = int(await self.redis.zremrangebyscore(keys.jobs_index(), "-inf", cutoff))
        for status in FINAL_STATUSES:
            await self.redis.zremrangebyscore(keys.finished(status), "-inf", finished_cutoff)
        return removed

    # --- previews -------------------------------------------------------------------------------

    async def save_preview(self, job_id: str, preview: PreviewImage) -> None:
        """Keep the job's latest preview (replacing the one before) for a while."""
        key = keys.job_preview(job_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(key, mapping={"data": preview.data, "type": preview.content_type})
            pipe.expire(key, PREVIEW_TTL)
            await pipe.execute()

    async def preview(self, job_id: str) -> PreviewImage | None:
        stored: dict[bytes, bytes] = await self.redis.hgetall(keys.job_preview(job_id))  # type: ignore[misc]
        if not stored:
            return None
        return PreviewImage(data=stored[b"data"], content_type=stored[b"type"].decode())


def _limit(value: int | None) -> str:
    return "" if value is None else str(value)
