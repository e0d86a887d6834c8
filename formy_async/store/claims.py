"""What a job's creation claims in the same step: an Idempotency-Key, a place in result reuse.

The job store's create script runs wrapped (`wrap`) in a check that comes first and a claim
that follows only when the job was written, all in one script: ten identical submissions on
several web processes find the key taken by the first one and answer its job, and no quota is
spent on them; two identical reusable submissions never both become the one that runs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from redis.asyncio import Redis

from ..errors import IdempotencyKeyReuse
from . import keys
from .connections import text
from .scripts import Script

CLAIM_KEYS = ("idem_key", "reuse_key", "followers_key", "following_key")
CLAIM_ARGS = ("idem_body", "idem_ttl", "reuse_mode", "reuse_expected")

# Before the create: a key already taken with the same body answers its job's id (nothing is
# written), with another body -4. A reuse claim whose leader changed since the caller read it
# answers -5: the caller decides again. After the create (seq > 0 only: a refused create claims
# nothing): the key is taken, and the job becomes the leader of its request or one of the
# leader's followers. `job_id` and `ttl` are the create script's own arguments.
_CLAIM = """
if idem_body ~= '' then
  local stored = redis.call('GET', idem_key)
  if stored then
    local space = string.find(stored, ' ', 1, true)
    if string.sub(stored, 1, space - 1) ~= idem_body then return -4 end
    return string.sub(stored, space + 1)
  end
end
if reuse_mode ~= '' and (redis.call('GET', reuse_key) or '') ~= reuse_expected then
  return -5
end
local seq = create()
if seq > 0 then
  if idem_body ~= '' then
    redis.call('SET', idem_key, idem_body .. ' ' .. job_id, 'EX', idem_ttl)
  end
  if reuse_mode == 'lead' then
    redis.call('SET', reuse_key, job_id, 'EX', ttl)
  elseif reuse_mode == 'follow' then
    redis.call('SADD', followers_key, job_id)
    redis.call('EXPIRE', followers_key, ttl)
    redis.call('ZADD', following_key, 'NX', now, reuse_expected)
  end
end
return seq
"""
_KEY_REUSED, _LEADER_CHANGED = -4, -5


class DuplicateSubmission(Exception):  # control flow, as arq's Retry
    """The Idempotency-Key already created a job (with the same body): `job_id` is it."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id


class LeaderChanged(Exception):
    """Another job became (or stopped being) the leader of this request meanwhile."""


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Claims:
    """What a creation claims: `user`'s Idempotency-Key (with its body's digest), and its place
    in reuse: `lead` (it runs; `expected` was the leader before) or `follow` the leader
    `expected`."""

    user: str = ""
    idempotency_key: str | None = None
    body_digest: str = ""
    idempotency_ttl: int = 24 * 3600
    reuse_key: str = ""
    reuse_mode: Literal["", "lead", "follow"] = ""
    expected: str = ""

    @property
    def keys(self) -> dict[str, str]:
        key = self.idempotency_key
        return {
            "idem_key": keys.idempotency(self.user, digest(key)) if key is not None else "-",
            "reuse_key": self.reuse_key or "-",
            "followers_key": keys.reuse_followers(self.expected) if self.expected else "-",
            "following_key": keys.REUSE_FOLLOWING,
        }

    @property
    def args(self) -> dict[str, Any]:
        return {
            "idem_body": self.body_digest if self.idempotency_key is not None else "",
            "idem_ttl": self.idempotency_ttl,
            "reuse_mode": self.reuse_mode,
            "reuse_expected": self.expected,
        }


def wrap(redis: Redis, create_keys: Sequence[str], create_args: Sequence[str], body: str) -> Script:
    """The create script `body` run as the Lua function `create()` between the claims."""
    source = "local function create()\n" + body + "\nend\n" + _CLAIM
    return Script(redis, (*create_keys, *CLAIM_KEYS), (*create_args, *CLAIM_ARGS), source)


def settled(reply: Any) -> int:
    """The create's seq, from what the wrapped script answered (or what it raises instead)."""
    if isinstance(reply, bytes | str):
        raise DuplicateSubmission(reply.decode() if isinstance(reply, bytes) else reply)
    seq = int(reply)
    if seq == _KEY_REUSED:
        raise IdempotencyKeyReuse(
            "this Idempotency-Key was already used with another body: "
            "send a new key for a new submission"
        )
    if seq == _LEADER_CHANGED:
        raise LeaderChanged()
    return seq


async def submitted_with(redis: Redis, user: str, key: str) -> tuple[str, str] | None:
    """(body digest, job id) of what `user`'s Idempotency-Key created, if it did."""
    stored = await redis.get(keys.idempotency(user, digest(key)))
    if stored is None:
        return None
    body, _, job_id = text(stored).partition(" ")
    return body, job_id
