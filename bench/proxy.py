"""Comfy-Org's `comfy-api-proxy` (PyPI), in a virtualenv of its own that the bench builds.

The proxy is a peer, not a dependency: it never enters the project's environment. On first use
the bench creates a venv under the user's cache (`$FORMY_BENCH_CACHE`, else
`~/.cache/formy-bench`), installs the pinned release into it with pip, and keeps `pip freeze` of
it beside, so that the figures name exactly what ran.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

from . import procs

VERSION = "0.1.6"
PACKAGE = f"comfy-api-proxy=={VERSION}"


def cache_dir() -> Path:
    root = os.environ.get("FORMY_BENCH_CACHE") or Path.home() / ".cache" / "formy-bench"
    return Path(root)


def venv_dir() -> Path:
    return cache_dir() / f"comfy-api-proxy-{VERSION}"


def executable() -> Path:
    return venv_dir() / "bin" / "comfy-api-proxy"


def build_venv(target: Path, *install: str) -> None:
    """Create a venv at `target` with the base interpreter (none of the project venv's packages)
    and `pip install` `install` into it; `freeze.txt` is written last and marks a finished
    build, so a build cut short is started over next time."""
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


async def ensure_venv(target: Path, command: Path, *install: str) -> Path:
    """`command` inside the venv at `target`, building the venv first when it is not there."""
    if not _built(target, command):
        print(f"  installing {' '.join(install)} into {target} …", file=sys.stderr, flush=True)
        await asyncio.to_thread(build_venv, target, *install)
    return command


async def ensure_installed() -> Path:
    """The proxy's command, building its venv first when it is not there yet."""
    return await ensure_venv(venv_dir(), executable(), PACKAGE)


def installed() -> list[str]:
    """`pip freeze` of the proxy's venv: the exact versions that ran."""
    path = venv_dir() / "freeze.txt"
    return path.read_text().split() if path.exists() else []


async def start(port: int, comfyui_url: str) -> procs.Proc:
    """`comfy-api-proxy --comfyui URL --port P` (loopback, no token, no state dir: its defaults),
    ready once `/api/v2/health` answers."""
    command = await ensure_installed()
    argv = [str(command), "--comfyui", comfyui_url, "--port", str(port)]
    proc = procs.Proc("comfy-api-proxy", argv)
    await procs.wait_http(proc, f"http://127.0.0.1:{port}/api/v2/health")
    return proc
