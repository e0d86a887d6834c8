"""Upload records: what `POST /api/uploads` stored (its bytes are in storage), kept a while."""

from __future__ import annotations

from redis.asyncio import Redis

from ..models import Upload
from . import keys


class UploadStore:
    """Reads and writes upload records by id."""

    def __init__(self, redis: Redis, *, ttl: int) -> None:
        self.redis = redis
        self.ttl = ttl

    async def put(self, upload: Upload) -> None:
        await self.redis.set(keys.upload(upload.id), upload.model_dump_json(), ex=self.ttl)

    async def get(self, upload_id: str) -> Upload | None:
        """The upload, or None when there is none (or it expired)."""
        raw = await self.redis.get(keys.upload(upload_id))
        return Upload.model_validate_json(raw) if raw is not None else None
