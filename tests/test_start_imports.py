"""What the service's processes import at start-up: heavy dependencies only where they are used.

Each one costs every process megabytes of memory from start-up on; they are imported when first
needed (S3 storage, a video or audio output, an uploaded image).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from .conftest import ROOT

SECRET = "s" * 48
#: what neither process may hold once started with the default (local) storage
NEVER = {
    "aiobotocore",
    "botocore",
    "av",
    "formy_async.simulator",
    "fakeredis",
    "unittest.mock",
    "blake3",  # v2 uploads only
}

WEB = """
from formy_async.settings import Settings
from formy_async.web.app import create_app
create_app(Settings())
"""
WORKER = """
from formy_async.settings import Settings
from formy_async.worker.process import FormyWorker
from formy_async.worker.settings import worker_kwargs
worker_kwargs(Settings())
"""
#: `formy-async run` pointed at a Redis and a ComfyUI: web and worker in one process
RUN = """
from formy_async.settings import Settings
from formy_async.web.app import create_app
import formy_async.embedded
create_app(Settings())
"""


def loaded_after(code: str) -> set[str]:
    """The modules (and their packages) a fresh interpreter holds after running `code`."""
    script = code + "import sys, json; print(json.dumps(sorted(sys.modules)))"
    env = {
        "SECRET_KEY": SECRET,
        "FORMY_WORKFLOWS_DIR": str(ROOT / "workflows"),
        "PYTHONPATH": str(ROOT),
    }
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return set(json.loads(result.stdout.splitlines()[-1]))


def held(modules: set[str], names: set[str]) -> set[str]:
    return {n for n in names if n in modules or any(m.startswith(n + ".") for m in modules)}


@pytest.mark.parametrize(("process", "code"), [("web", WEB), ("worker", WORKER), ("run", RUN)])
def test_a_process_starts_without_what_it_does_not_use(process: str, code: str) -> None:
    assert held(loaded_after(code), NEVER) == set(), process


@pytest.mark.parametrize(("process", "code"), [("web", WEB), ("worker", WORKER), ("run", RUN)])
def test_a_process_starts_without_pillow(process: str, code: str) -> None:
    """The web checks uploaded images now and then; the worker reads a still output's size from
    its header, and needs Pillow only for other kinds (a GIF, an animation)."""
    assert held(loaded_after(code), {"PIL"}) == set(), process


#: a 3×2 PNG, made with the standard library: the probe below must not need Pillow to make one
STILL_PNG = """
import asyncio, struct, zlib
def chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
rows = b"".join(b"\\x00" + b"\\x00\\x00\\x00" * 3 for _ in range(2))
png = (b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 3, 2, 8, 2, 0, 0, 0))
       + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
from formy_async import media
info = asyncio.run(media.probe(png, "image"))
assert (info.width, info.height) == (3, 2), info
"""


def test_a_still_image_output_is_probed_without_pillow() -> None:
    assert held(loaded_after(STILL_PNG), {"PIL"}) == set()
