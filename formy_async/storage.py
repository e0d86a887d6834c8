"""Where job outputs live: a storage interface and its local-directory implementation."""

from __future__ import annotations

import mimetypes
import re
from pathlib import Path
from typing import Protocol

import aiofiles
import aiofiles.os

from .errors import NotFound

_SAFE_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def check_key(key: str) -> str:
    """A storage key is `part/part/...` of safe names: no traversal, no absolute paths."""
    parts = key.split("/")
    if not parts or not all(_SAFE_PART.match(p) and ".." not in p for p in parts):
        raise ValueError(f"unsafe storage key: {key!r}")
    return key


def content_type_of(name: str) -> str:
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


class Storage(Protocol):
    async def put(self, key: str, data: bytes) -> int:
        """Store `data` under `key`; return its size in bytes."""

    async def read(self, key: str) -> bytes:
        """The bytes under `key`; NotFound if there are none."""

    def local_path(self, key: str) -> Path | None:
        """A file path the web server can send directly, when the storage is a local disk."""


class LocalStorage:
    """A directory on this machine's disk (web and worker must share it)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    async def put(self, key: str, data: bytes) -> int:
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
            raise NotFound(f"no stored file {key!r}", code="output_not_found") from None

    def local_path(self, key: str) -> Path | None:
        return self._path(key)
