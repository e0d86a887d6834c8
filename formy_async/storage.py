"""Where inputs and outputs live: the storage interface, its implementations and the key layout."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Protocol

import aiofiles
import aiofiles.os
import aiohttp
import structlog

from .errors import FileNotFound, StorageUnavailable
from .settings import Settings

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import ObjectIdentifierTypeDef

log = structlog.get_logger()

_SAFE_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_MISSING_CODES = frozenset({"NoSuchKey", "NotFound", "404"})
DELETE_BATCH = 1000  # the most keys one DeleteObjects request takes

OUTPUTS = "outputs"
INPUTS = "inputs"
ASSETS = "assets"


def output_key(job_id: str, filename: str) -> str:
    return check_key(f"{OUTPUTS}/{job_id}/{filename}")


def input_key(upload_id: str) -> str:
    return check_key(f"{INPUTS}/{upload_id}")


def asset_key(hex_digest: str) -> str:
    """Where an asset's bytes are: named by their blake3 hash, shared by every record of them."""
    return check_key(f"{ASSETS}/{hex_digest}")


def check_key(key: str) -> str:
    """A storage key is `part/part/...` of safe names: no traversal, no absolute paths."""
    parts = key.split("/")
    if not all(_SAFE_PART.match(p) and ".." not in p for p in parts):
        raise ValueError(f"unsafe storage key: {key!r}")
    return key


class Storage(Protocol):
    """Bytes under keys. Every method is async end to end; keys come from `check_key`."""

    async def put(self, key: str, data: bytes, content_type: str) -> int:
        """Store `data` under `key` (replacing it); return its size in bytes."""

    async def read(self, key: str) -> bytes:
        """The bytes under `key`; FileNotFound if there are none."""

    async def size(self, key: str) -> int:
        """How many bytes are stored under `key`; FileNotFound if there are none."""

    async def read_range(self, key: str, start: int, stop: int) -> bytes:
        """The bytes from `start` up to (not including) `stop` of what is under `key`."""

    async def delete(self, key: str) -> None:
        """Remove `key`; no error if it is already gone."""

    async def delete_older_than(self, prefix: str, cutoff: float) -> int:
        """Remove every key under `prefix/` stored before `cutoff` (Unix time); return how many."""

    def local_path(self, key: str) -> Path | None:
        """A file the web server can send directly, when the storage is this machine's disk."""

    async def aclose(self) -> None:
        """Release connections."""


def _write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # a name of this write's own: two writes of one key never share a half-written file
    partial = path.with_name(f"{path.name}.{os.getpid()}-{uuid.uuid4().hex[:12]}.partial")
    try:
        partial.write_bytes(data)
        os.replace(partial, path)  # readers never see half a file
    finally:
        partial.unlink(missing_ok=True)


class LocalStorage:
    """A directory on this machine's disk (web and worker must share it)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    async def put(self, key: str, data: bytes, content_type: str) -> int:
        # one trip to a thread for the whole write, not one per step (five through aiofiles)
        await asyncio.to_thread(_write_file, self._path(key), data)
        return len(data)

    async def read(self, key: str) -> bytes:
        try:
            async with aiofiles.open(self._path(key), "rb") as f:
                return await f.read()
        except FileNotFoundError:
            raise FileNotFound(f"no stored file {key!r}") from None

    async def size(self, key: str) -> int:
        try:
            return (await aiofiles.os.stat(self._path(key))).st_size
        except FileNotFoundError:
            raise FileNotFound(f"no stored file {key!r}") from None

    async def read_range(self, key: str, start: int, stop: int) -> bytes:
        try:
            async with aiofiles.open(self._path(key), "rb") as f:
                await f.seek(start)
                return await f.read(max(0, stop - start))
        except FileNotFoundError:
            raise FileNotFound(f"no stored file {key!r}") from None

    async def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            await aiofiles.os.remove(self._path(key))

    async def delete_older_than(self, prefix: str, cutoff: float) -> int:
        base = self._path(prefix)
        removed = 0
        if not base.is_dir():
            return 0
        for directory, _dirs, files in os.walk(base, topdown=False):
            for name in files:
                path = Path(directory) / name
                if path.stat().st_mtime < cutoff:
                    path.unlink(missing_ok=True)
                    removed += 1
            if directory != str(base) and not os.listdir(directory):
                os.rmdir(directory)
        return removed

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    async def aclose(self) -> None:
        return None


@functools.cache
def _aws() -> SimpleNamespace:
    """What S3Storage uses of aiobotocore, imported with the first one: it costs a process about
    9 MB and a tenth of a second that local storage does without."""
    from aiobotocore.config import AioConfig  # type: ignore[import-untyped]
    from aiobotocore.session import get_session  # type: ignore[import-untyped]
    from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

    return SimpleNamespace(
        AioConfig=AioConfig,
        get_session=get_session,
        BotoCoreError=BotoCoreError,
        ClientError=ClientError,
    )


class S3Storage:
    """Objects in an S3-compatible bucket (AWS, R2, MinIO): web and worker share no disk.

    `storage_from_settings` is sync but runs inside the event loop, so the client is opened on
    first use (under a lock, so concurrent first calls open one client) and closed by `aclose`.
    """

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        connect_timeout: float = 10,
        read_timeout: float = 60,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.endpoint_url = endpoint_url
        self.region = region
        self._access_key_id = access_key_id
        self._secret_access_key = secret_access_key
        self._config = _aws().AioConfig(
            s3={"addressing_style": "path"},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"max_attempts": 3, "mode": "standard"},
            # third-party stores (R2, MinIO) reject some of the checksums botocore adds by default
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self._client: S3Client | None = None
        self._exits = contextlib.AsyncExitStack()
        self._lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Storage:
        return cls(
            settings.s3_bucket,
            prefix=settings.s3_prefix,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key,
        )

    def __repr__(self) -> str:
        return f"S3Storage(bucket={self.bucket!r}, prefix={self.prefix!r})"

    async def _s3(self) -> S3Client:
        if self._client is None:
            async with self._lock:
                if self._client is None:
                    self._client = await self._open()
        return self._client

    async def _open(self) -> S3Client:
        session = _aws().get_session()
        creator = session.create_client(
            "s3",
            region_name=self.region,
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self._access_key_id,
            aws_secret_access_key=self._secret_access_key,
            config=self._config,
        )
        log.info("storage_opening", bucket=self.bucket, endpoint=self.endpoint_url)
        with self._translated("open", self.bucket):
            client: S3Client = await self._exits.enter_async_context(creator)
            return client

    def _object_key(self, key: str) -> str:
        return self.prefix + check_key(key)

    @contextlib.contextmanager
    def _translated(self, operation: str, key: str) -> Iterator[None]:
        """Library errors become ours: a missing key is NotFound, the rest StorageUnavailable."""
        try:
            yield
        except _aws().ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", "unknown"))
            if code in _MISSING_CODES:
                raise FileNotFound(f"no stored file {key!r}") from None
            log.warning("storage_error", operation=operation, key=key, error=str(exc))
            raise StorageUnavailable(f"object storage refused {operation}: {code}") from exc
        except (_aws().BotoCoreError, aiohttp.ClientError, TimeoutError) as exc:
            log.warning("storage_error", operation=operation, key=key, error=str(exc))
            raise StorageUnavailable(
                f"object storage unreachable during {operation}: {type(exc).__name__}"
            ) from exc

    async def put(self, key: str, data: bytes, content_type: str) -> int:
        name = self._object_key(key)
        s3 = await self._s3()
        with self._translated("put", key):
            await s3.put_object(Bucket=self.bucket, Key=name, Body=data, ContentType=content_type)
        return len(data)

    async def read(self, key: str) -> bytes:
        name = self._object_key(key)
        s3 = await self._s3()
        with self._translated("read", key):
            response = await s3.get_object(Bucket=self.bucket, Key=name)
            async with response["Body"] as body:
                data: bytes = await body.read()
        return data

    async def size(self, key: str) -> int:
        name = self._object_key(key)
        s3 = await self._s3()
        with self._translated("size", key):
            response = await s3.head_object(Bucket=self.bucket, Key=name)
        return int(response["ContentLength"])

    async def read_range(self, key: str, start: int, stop: int) -> bytes:
        if stop <= start:
            return b""
        name = self._object_key(key)
        s3 = await self._s3()
        with self._translated("read", key):
            response = await s3.get_object(
                Bucket=self.bucket, Key=name, Range=f"bytes={start}-{stop - 1}"
            )
            async with response["Body"] as body:
                data: bytes = await body.read()
        return data

    async def delete(self, key: str) -> None:
        name = self._object_key(key)
        s3 = await self._s3()
        with self._translated("delete", key):
            await s3.delete_object(Bucket=self.bucket, Key=name)  # S3 answers 204 if absent

    async def delete_older_than(self, prefix: str, cutoff: float) -> int:
        base = self._object_key(prefix) + "/"
        s3 = await self._s3()
        removed = 0
        batch: list[ObjectIdentifierTypeDef] = []
        with self._translated("delete_older_than", prefix):
            # S3 lists after the last key returned, so deleting behind the listing is safe
            async for page in s3.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=base
            ):
                for item in page.get("Contents", []):
                    if item["LastModified"].timestamp() < cutoff:
                        batch.append({"Key": item["Key"]})
                    if len(batch) == DELETE_BATCH:
                        removed += await self._delete_batch(s3, batch)
                        batch = []
            if batch:
                removed += await self._delete_batch(s3, batch)
        return removed

    async def _delete_batch(self, s3: S3Client, batch: list[ObjectIdentifierTypeDef]) -> int:
        response = await s3.delete_objects(
            Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
        )
        errors = response.get("Errors", [])
        if errors:
            log.warning(
                "storage_delete_incomplete",
                failed=len(errors),
                first_key=errors[0].get("Key"),
                error=errors[0].get("Code"),
            )
        return len(batch) - len(errors)

    def local_path(self, key: str) -> Path | None:
        return None

    async def aclose(self) -> None:
        async with self._lock:
            await self._exits.aclose()
            self._client = None


def storage_from_settings(settings: Settings) -> Storage:
    """The storage the settings choose."""
    if settings.storage_backend == "s3":
        if not settings.s3_bucket:
            raise ValueError("FORMY_S3_BUCKET must name a bucket when FORMY_STORAGE_BACKEND=s3")
        return S3Storage.from_settings(settings)
    return LocalStorage(settings.storage_dir)
