"""Where inputs and outputs live: the storage interface, its implementations and the key layout."""

from __future__ import annotations

import contextlib
import mimetypes
import os
import re
from pathlib import Path
from typing import Protocol

import aiofiles
import aiofiles.os

from .errors import NotFound
from .settings import Settings

_SAFE_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")

OUTPUTS = "outputs"
INPUTS = "inputs"


def output_key(job_id: str, filename: str) -> str:
    return check_key(f"{OUTPUTS}/{job_id}/{filename}")


def input_key(upload_id: str) -> str:
    return check_key(f"{INPUTS}/{upload_id}")


def check_key(key: str) -> str:
    """A storage key is `part/part/...` of safe names: no traversal, no absolute paths."""
    parts = key.split("/")
    if not all(_SAFE_PART.match(p) and ".." not in p for p in parts):
        raise ValueError(f"unsafe storage key: {key!r}")
    return key


def content_type_of(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


class Storage(Protocol):
    """Bytes under keys. Every method is async end to end; keys come from `check_key`."""

    async def put(self, key: str, data: bytes, content_type: str) -> int:
        """Store `data` under `key` (replacing it); return its size in bytes."""

    async def read(self, key: str) -> bytes:
        """The bytes under `key`; NotFound if there are none."""

    async def delete(self, key: str) -> None:
        """Remove `key`; no error if it is already gone."""

    async def delete_older_than(self, prefix: str, cutoff: float) -> int:
        """Remove every key under `prefix/` stored before `cutoff` (Unix time); return how many."""

    def local_path(self, key: str) -> Path | None:
        """A file the web server can send directly, when the storage is this machine's disk."""

    async def aclose(self) -> None:
        """Release connections."""


class LocalStorage:
    """A directory on this machine's disk (web and worker must share it)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    async def put(self, key: str, data: bytes, content_type: str) -> int:
        path = self._path(key)
        await aiofiles.os.makedirs(path.parent, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        async with aiofiles.open(partial, "wb") as f:
            await f.write(data)
        await aiofiles.os.replace(partial, path)  # readers never see half a file
        return len(data)

    async def read(self, key: str) -> bytes:
        try:
            async with aiofiles.open(self._path(key), "rb") as f:
                return await f.read()
        except FileNotFoundError:
            raise NotFound(f"no stored file {key!r}", code="file_not_found") from None

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


def storage_from_settings(settings: Settings) -> Storage:
    """The storage the settings choose."""
    if settings.storage_backend == "s3":
        raise NotImplementedError("s3 storage")
    return LocalStorage(settings.storage_dir)
