"""The virtualenvs the bench builds to run things outside its own (bench.proxy, bench.service).

Each lives under the user's cache (`$FORMY_BENCH_CACHE`, else `~/.cache/formy-bench`), is made
with the base interpreter (so it sees none of the project venv's packages) and keeps `pip freeze`
of itself in `freeze.txt`, written last: a build cut short is started over next time, and the
figures name exactly what ran. Delete a directory to rebuild it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path


def cache_dir() -> Path:
    root = os.environ.get("FORMY_BENCH_CACHE") or Path.home() / ".cache" / "formy-bench"
    return Path(root)


def build(target: Path, *install: str) -> None:
    """Create a venv at `target` and `pip install` `install` into it."""
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", str(target)], check=True)
    pip = [str(target / "bin" / "python"), "-m", "pip", "--disable-pip-version-check"]
    subprocess.run([*pip, "install", "--quiet", *install], check=True)
    freeze = subprocess.run([*pip, "freeze"], check=True, capture_output=True, text=True)
    (target / "freeze.txt").write_text(freeze.stdout)


def _built(target: Path, command: Path) -> bool:
    return command.exists() and (target / "freeze.txt").exists()


async def ensure(target: Path, command: Path, *install: str) -> Path:
    """`command` inside the venv at `target`, building the venv first when it is not there."""
    if not _built(target, command):
        print(f"  installing {' '.join(install)} into {target} …", file=sys.stderr, flush=True)
        await asyncio.to_thread(build, target, *install)
    return command


def frozen(target: Path) -> list[str]:
    """`pip freeze` of the venv at `target` (empty if it was never built)."""
    path = target / "freeze.txt"
    return path.read_text().split() if path.exists() else []
