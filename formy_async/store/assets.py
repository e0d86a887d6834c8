"""Asset records of the v2 API: by id, each user's latest by hash, what an upload's key made."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import LockError

from ..errors import StorageUnavailable
from ..models import Asset
from . import keys
from .claims import digest
from .connections import text
from .scripts import Script

# The record, its hash's pointer and the Idempotency-Key's claim are written together, unless
# the key was claimed meanwhile (a retry that overtook the first try): then nothing is written
# and the claim is answered. `replacing` is a claim whose record was gone when the caller
# looked: the key may be claimed anew over it.
_PUT_KEYED = """
local stored = redis.call('GET', claim_key)
if stored and stored ~= replacing then return stored end
redis.call('SET', record_key, record, 'PXAT', expires_ms)
redis.call('SET', pointer_key, asset_id, 'PXAT', expires_ms)
redis.call('SET', claim_key, claim, 'EX', claim_ttl)
return false
"""


#: the longest one write of an asset's bytes holds them, and the longest another waits for it
WRITE_HOLD_SECONDS = 300
WRITE_WAIT_SECONDS = 60


def _blob_write(hex_digest: str) -> str:
    """Held while the bytes of one hash are written (see `AssetStore.writing`)."""
    return keys.asset_write_lock(hex_digest)


def _upload_claim(user: str, key: str) -> str:
    """`<hash> <asset id> <1|0: new to the user>` of the upload one user's key made."""
    return keys.asset_upload_claim(user, digest(key))


def _expires_ms(asset: Asset) -> int:
    """When the record goes, to the millisecond (whole seconds of TTL would end it early);
    one already past its time is kept a moment rather than refused."""
    return max(int(asset.expires_at * 1000), int(time.time() * 1000) + 1000)


@dataclass(frozen=True)
class KeyedUpload:
    """What an upload's Idempotency-Key made: an asset of these bytes, new to its user or not."""

    hash: str
    asset_id: str
    created_new: bool

    def encode(self) -> str:
        return f"{self.hash} {self.asset_id} {int(self.created_new)}"

    @classmethod
    def decode(cls, raw: bytes | str) -> KeyedUpload:
        hash_, asset_id, new = text(raw).split(" ")
        return cls(hash=hash_, asset_id=asset_id, created_new=new == "1")


class AssetStore:
    """Reads and writes asset records; each expires at its `expires_at`."""

    def __init__(self, redis: Redis, *, ttl: int) -> None:
        self.redis = redis
        self.ttl = ttl  # how long a new record is kept
        self._put_keyed = Script(
            redis,
            ("claim_key", "record_key", "pointer_key"),
            ("record", "asset_id", "expires_ms", "claim", "claim_ttl", "replacing"),
            _PUT_KEYED,
        )

    async def put(self, asset: Asset) -> None:
        """Store the record, and make it the user's asset for its hash."""
        expires_ms = _expires_ms(asset)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(keys.asset(asset.id), asset.model_dump_json(), pxat=expires_ms)
            pipe.set(keys.asset_by_hash(asset.user, asset.hash), asset.id, pxat=expires_ms)
            await pipe.execute()

    @contextlib.asynccontextmanager
    async def writing(self, hex_digest: str) -> AsyncIterator[None]:
        """Held while the bytes of `hex_digest` are written, by one process of all: uploads of
        the same new bytes would otherwise write one file at once (local storage writes each
        key through one temporary name), and a reader could see it half written."""
        lock = self.redis.lock(
            _blob_write(hex_digest), timeout=WRITE_HOLD_SECONDS, blocking_timeout=WRITE_WAIT_SECONDS
        )
        if not await lock.acquire():
            raise StorageUnavailable(
                f"these bytes have been being stored by another upload for over "
                f"{WRITE_WAIT_SECONDS} s: try again"
            )
        try:
            yield
        finally:
            with contextlib.suppress(LockError):  # held past WRITE_HOLD_SECONDS: not ours now
                await lock.release()

    async def put_keyed(
        self,
        asset: Asset,
        key: str,
        *,
        created_new: bool,
        key_ttl: int,
        replacing: KeyedUpload | None = None,
    ) -> KeyedUpload | None:
        """`put`, and claim `asset.user`'s Idempotency-Key `key` for it (kept `key_ttl` s).

        When the key was claimed by another upload first, nothing is written: that claim is
        the answer. `replacing` (a claim seen earlier whose record is gone) may be taken over.
        """
        claim = KeyedUpload(hash=asset.hash, asset_id=asset.id, created_new=created_new)
        stored = await self._put_keyed(
            keys={
                "claim_key": _upload_claim(asset.user, key),
                "record_key": keys.asset(asset.id),
                "pointer_key": keys.asset_by_hash(asset.user, asset.hash),
            },
            args={
                "record": asset.model_dump_json(),
                "asset_id": asset.id,
                "expires_ms": _expires_ms(asset),
                "claim": claim.encode(),
                "claim_ttl": key_ttl,
                "replacing": replacing.encode() if replacing is not None else "",
            },
        )
        return KeyedUpload.decode(stored) if stored is not None else None

    async def keyed_upload(self, user: str, key: str) -> KeyedUpload | None:
        """What `user`'s upload with Idempotency-Key `key` made, if one did (and it is kept)."""
        stored = await self.redis.get(_upload_claim(user, key))
        return KeyedUpload.decode(stored) if stored is not None else None

    async def get(self, asset_id: str) -> Asset | None:
        """The asset, or None when there is none (or it expired)."""
        raw = await self.redis.get(keys.asset(asset_id))
        return Asset.model_validate_json(raw) if raw is not None else None

    async def by_hash(self, user: str, digest: str) -> Asset | None:
        """`user`'s latest live asset with these bytes, or None (another user's never count)."""
        asset_id = await self.redis.get(keys.asset_by_hash(user, digest))
        if asset_id is None:
            return None
        asset = await self.get(text(asset_id))
        return asset if asset is not None and asset.user == user else None

    async def delete(self, asset: Asset) -> None:
        """Forget the record (and the hash's pointer, if it is to this record)."""
        await self.redis.delete(keys.asset(asset.id))
        pointer = keys.asset_by_hash(asset.user, asset.hash)
        current = await self.redis.get(pointer)
        if current is not None and text(current) == asset.id:
            await self.redis.delete(pointer)
