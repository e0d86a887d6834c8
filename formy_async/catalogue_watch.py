"""Reloading the workflow catalogue while the service runs: no restart, never mid-job.

Every web and worker process watches its workflows directory (the names, sizes and times of
its files, every few seconds). A change loads the whole catalogue again, checked as at
start-up; only a catalogue that loads replaces the one in service, in place, so what a running
job took from the old one stays as it was. A broken file is refused with its error, once, and
the last good catalogue goes on serving.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import structlog

from .workflows import Catalogue, WorkflowError

log = structlog.get_logger()

Stamp = tuple[tuple[str, int, int], ...]


def stamp(directory: Path) -> Stamp:
    """What tells that the directory's workflows changed: each file's name, size and time."""
    found = []
    for path in sorted(directory.glob("*")):
        if path.suffix in (".toml", ".json") and path.is_file():
            with contextlib.suppress(FileNotFoundError):  # removed while being listed
                info = path.stat()
                found.append((path.name, info.st_size, info.st_mtime_ns))
    return tuple(found)


class CatalogueWatch:
    """Keeps `catalogue` what `directory` holds, checking every `interval` seconds."""

    def __init__(self, catalogue: Catalogue, directory: Path, interval: float) -> None:
        self.catalogue = catalogue
        self.directory = directory
        self.interval = interval
        # unknown: the catalogue may have been loaded a while before this watch began
        self._seen: Stamp | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.interval > 0:
            self._task = asyncio.create_task(self._watch(), name="catalogue-watch")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check()
            except OSError as exc:  # the directory itself went away: keep serving
                log.warning("catalogue_unreadable", directory=str(self.directory), error=str(exc))

    async def check(self) -> bool:
        """Reload if the files changed; True when a new catalogue went into service."""
        now = await asyncio.to_thread(stamp, self.directory)
        if now == self._seen:
            return False
        self._seen = now
        try:
            fresh = await asyncio.to_thread(Catalogue.load, self.directory)
        except WorkflowError as exc:
            log.error("catalogue_refused", error=str(exc), note="the last good one stays in use")
            return False
        before = {name: self.catalogue[name].version for name in self.catalogue}
        after = {name: fresh[name].version for name in fresh}
        if after == before:
            return False
        self.catalogue.replace(fresh)
        log.info(
            "catalogue_reloaded",
            added=sorted(after.keys() - before.keys()),
            removed=sorted(before.keys() - after.keys()),
            changed=sorted(n for n in before.keys() & after.keys() if before[n] != after[n]),
        )
        return True
