"""Job records and their per-job event logs in Redis, and the one way events are appended."""

from __future__ import annotations

import time
import uuid
from typing import Any

from redis.asyncio import Redis

from . import keys
from .errors import NotFound
from .metrics import record_job_finished, record_submitted
from .models import EVENT_ADAPTER, Event, Job

# Appends one event atomically: the next sequence number is the log's length + 1, spliced into
# the event's JSON between `head` and `tail`; the job record is replaced; the event is published.
# Nothing is appended once the job is final, so a late writer (a cancelled worker, a retried run)
# can never add events after the final one.
# A retried call (the reply was lost, the script had run) finds its own event id in KEYS[6] and
# answers the seq it got the first time instead of appending the event twice.
# Creating a job fails (-1) when its user already has `limit` jobs not yet final.
#   KEYS: job record, event log, final marker, jobs index, active jobs, last append,
#         finished jobs of the final status (for stats), the user's jobs, the user's active jobs
#   ARGV: head, tail, job JSON, is_final ("1"/"0"), ttl, channel, index score ("" = no index),
#         job id, event id (32 hex chars), now, the user's limit ("" = none)
_APPEND = """
local last = redis.call('GET', KEYS[6])
if last and string.sub(last, 1, 32) == ARGV[9] then return tonumber(string.sub(last, 34)) end
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
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
redis.call('PUBLISH', ARGV[6], event)
return seq
"""

_SEQ_PLACEHOLDER = '"seq":0,'


def split_for_seq(event_json: str) -> tuple[str, str]:
    """Split an event's JSON around its (zero) sequence number: `head + str(seq) + tail`."""
    head, sep, tail = event_json.partition(_SEQ_PLACEHOLDER)
    if not sep:
        raise ValueError("event JSON has no seq placeholder")
    return head + '"seq":', "," + tail


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

    async def append(
        self, job: Job, event: Event, *, create: bool = False, limit: int | None = None
    ) -> int:
        """Store `job` and append `event` (whose status and progress are taken from `job`).

        Returns the event's sequence number; 0 when the job was already final, and -1 when
        creating it would give its user more than `limit` unfinished jobs: nothing is written.
        """
        event.status = job.status
        event.progress = job.progress
        event.seq = 0
        head, tail = split_for_seq(event.model_dump_json())
        args: list[Any] = [
            head,
            tail,
            job.model_dump_json(),
            "1" if job.is_final else "0",
            self.ttl,
            keys.events_channel(job.id),
            repr(job.created_at) if create else "",
            job.id,
            uuid.uuid4().hex,
            repr(time.time()),
            str(limit) if create and limit is not None else "",
        ]
        job_keys = [keys.job(job.id), keys.job_events(job.id), keys.job_final(job.id)]
        index_keys = [
            keys.jobs_index(),
            keys.active_jobs(),
            keys.job_last_append(job.id),
            keys.finished(job.status if job.is_final else "done"),
            keys.user_jobs(job.user),
            keys.user_active(job.user),
        ]
        seq = int(await self._append(keys=[*job_keys, *index_keys], args=args))
        event.seq = seq
        # counted here, once per job on every path, since nothing follows a final event
        if seq > 0 and create:
            await record_submitted(self.redis, job.workflow)
        if seq > 0 and job.is_final:
            await record_job_finished(self.redis, job)
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
