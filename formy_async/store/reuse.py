"""Result reuse in Redis: which job runs a request, and the jobs that follow it meanwhile.

A reusable request is known by its fingerprint (see `web.reuse`); the fingerprint's key names
its leader, the latest job that runs or ran it, and is claimed with the job's creation (see
`claims`). A follower is a job like any other, but its run waits in arq's queue far in the
future: when its leader ends, the follower finishes with the leader's outputs (done), or its
run is made due at once (the leader failed or was cancelled), and either way it can never be
lost: a follower nobody settles runs by itself when its run falls due.
"""

from __future__ import annotations

import time

from redis.asyncio import Redis

from . import keys
from .connections import text
from .queue import QueueEntry
from .scripts import Script

#: a follower whose leader no web process settled within this long runs by itself
FOLLOWER_DEFER = 24 * 3600.0

_TAKE = """
local members = redis.call('SMEMBERS', followers_key)
redis.call('DEL', followers_key)
redis.call('ZREM', following_key, leader_id)
return members
"""

_RELEASE = """
if not redis.call('ZSCORE', queue_key, run_id) then return 0 end
redis.call('ZADD', queue_key, score, run_id)
redis.call('PUBLISH', wake_channel, run_id)
return 1
"""


def leader_key(scope: str, fingerprint: str) -> str:
    return keys.reuse_leader(scope, fingerprint)


def deferred(entry: QueueEntry, seconds: float = FOLLOWER_DEFER) -> QueueEntry:
    """A follower's run: queued like any other, but due only `seconds` from now."""
    return QueueEntry(
        job_id=entry.job_id,
        payload=entry.payload,
        expires_ms=entry.expires_ms + int(seconds * 1000),
        # past every priority's offset into the past: no worker takes it before then
        score=int((time.time() + seconds) * 1000),
    )


class ReuseStore:
    """Reads leaders, and takes, finishes and releases followers."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._take = Script(redis, ("followers_key", "following_key"), ("leader_id",), _TAKE)
        self._release = Script(redis, ("queue_key",), ("run_id", "score", "wake_channel"), _RELEASE)

    async def leader(self, key: str) -> str | None:
        """The id of the job that runs (or ran) the request known by `key`."""
        found = await self.redis.get(key)
        return text(found) if found is not None else None

    async def followed(self, limit: int = 100) -> list[str]:
        """Leaders that have followers waiting, longest waiting first."""
        return [text(m) for m in await self.redis.zrange(keys.REUSE_FOLLOWING, 0, limit - 1)]

    async def is_followed(self, leader_id: str) -> bool:
        return await self.redis.zscore(keys.REUSE_FOLLOWING, leader_id) is not None

    async def take_followers(self, leader_id: str) -> list[str]:
        """The leader's followers, each handed to one caller only."""
        found = await self._take(
            {
                "followers_key": keys.reuse_followers(leader_id),
                "following_key": keys.REUSE_FOLLOWING,
            },
            {"leader_id": leader_id},
        )
        return sorted(text(m) for m in found)

    async def drop_run(self, job_id: str) -> None:
        """Remove a settled follower's waiting run (it would find its job final and stop)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(keys.ARQ_QUEUE, job_id)
            pipe.delete(keys.ARQ_JOB_PREFIX + job_id)
            await pipe.execute()

    async def release_run(self, job_id: str, *, priority_offset_ms: int) -> bool:
        """Make a follower's waiting run due now; False when it is not in the queue any more."""
        score = int(time.time() * 1000) + priority_offset_ms
        queue_keys = {"queue_key": keys.ARQ_QUEUE}
        args = {"run_id": job_id, "score": score, "wake_channel": keys.WAKE_CHANNEL}
        return bool(await self._release(queue_keys, args))
