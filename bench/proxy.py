"""Comfy-Org's `comfy-api-proxy` (PyPI), in a virtualenv of its own that the bench builds.

The proxy is a peer, not a dependency: it never enters the project's environment. On first use
the bench builds a venv with the pinned release under its cache (see bench.venvs).
"""

from __future__ import annotations

from pathlib import Path

from . import procs, venvs

VERSION = "0.1.6"
PACKAGE = f"comfy-api-proxy=={VERSION}"


def venv_dir() -> Path:
    return venvs.cache_dir() / f"comfy-api-proxy-{VERSION}"


def executable() -> Path:
    return venv_dir() / "bin" / "comfy-api-proxy"


async def ensure_installed() -> Path:
    """The proxy's command, building its venv first when it is not there yet."""
    return await venvs.ensure(venv_dir(), executable(), PACKAGE)


def installed() -> list[str]:
    """`pip freeze` of the proxy's venv: the exact versions that ran."""
    return venvs.frozen(venv_dir())


async def start(port: int, comfyui_url: str) -> procs.Proc:
    """`comfy-api-proxy --comfyui URL --port P` (loopback, no token, no state dir: its defaults),
    ready once `/api/v2/health` answers."""
    command = await ensure_installed()
    argv = [str(command), "--comfyui", comfyui_url, "--port", str(port)]
    proc = procs.Proc("comfy-api-proxy", argv)
    await procs.wait_http(proc, f"http://127.0.0.1:{port}/api/v2/health")
    return proc
