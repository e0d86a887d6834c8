"""Shared fixtures: a real Redis (found or started), free ports, and whole stacks on them."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis
from redis.asyncio import Redis

from formy_async.auth import mint_token
from formy_async.embedded import Stack, running_stack
from formy_async.settings import Settings
from formy_async.simulator import SimulatorConfig, run_simulator

ROOT = Path(__file__).resolve().parent.parent
TEST_SECRET = "tests-only-secret-" + "0123456789abcdef" * 3
#: alice's token; the stacks below trust TEST_SECRET
TOKEN = mint_token(TEST_SECRET, "alice", ttl=6 * 3600)
ADMIN_TOKEN = mint_token(TEST_SECRET, "root", admin=True, ttl=6 * 3600)
TEST_DB = int(os.environ.get("FORMY_TEST_REDIS_DB", "15"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _answers(url: str) -> bool:
    try:
        client = sync_redis.Redis.from_url(url, socket_connect_timeout=1)
        ok = bool(client.ping())
        client.close()
        return ok
    except sync_redis.RedisError:
        return False


def _with_db(url: str, db: int) -> str:
    """`url` pointing at database `db` (whatever database it named before)."""
    scheme, _, rest = url.partition("://")
    host = rest.split("/", 1)[0].split("?", 1)[0]
    return f"{scheme}://{host}/{db}"


@pytest.fixture(scope="session")
def redis_server_url() -> Iterator[str]:
    """The Redis at REDIS_URL or 127.0.0.1:6379; else a redis-server of our own on a free port."""
    url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
    if _answers(url):
        yield url
        return
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.exit(
            f"no Redis answers at {url} and no redis-server is installed: start one, set "
            "REDIS_URL, or install it (Debian: apt-get install redis-server)",
            returncode=3,
        )
    port = free_port()
    with tempfile.TemporaryDirectory() as workdir:
        proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                workdir,
            ],
            stdout=subprocess.DEVNULL,
        )
        url = f"redis://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while not _answers(url):
            if time.monotonic() > deadline:
                proc.kill()
                pytest.exit(f"redis-server did not start on port {port}", returncode=3)
            time.sleep(0.05)
        try:
            yield url
        finally:
            proc.terminate()
            proc.wait(10)


@pytest.fixture
def redis_url(redis_server_url: str) -> Iterator[str]:
    """A Redis database of the tests' own, emptied before and after each test."""
    url = _with_db(redis_server_url, TEST_DB)
    client = sync_redis.Redis.from_url(url)
    client.flushdb()
    try:
        yield url
    finally:
        client.flushdb()
        client.close()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


#: the ComfyUI releases the simulator imitates: the 0.3 line, and the current one (0.25 on)
COMFYUI_VERSIONS = ("0.3.64", "0.38.1")
#: parametrize a module with this to run its tests against each of them
EVERY_COMFYUI = pytest.mark.parametrize("comfyui_version", COMFYUI_VERSIONS, indirect=True)


@pytest.fixture
def comfyui_version(request: pytest.FixtureRequest) -> str:
    """The ComfyUI release the test's simulator imitates (0.3.64 unless parametrized)."""
    version: str = getattr(request, "param", COMFYUI_VERSIONS[0])
    return version


@pytest.fixture
async def simulator_url(comfyui_version: str) -> AsyncIterator[str]:
    config = SimulatorConfig(step_delay=0.005, comfyui_version=comfyui_version)
    async with run_simulator(config) as url:
        yield url


def stack_settings(redis_url: str, comfyui_url: str, storage: Path, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "comfyui_url": comfyui_url,
        "host": "127.0.0.1",
        "port": free_port(),
        "storage_dir": storage,
        "workflows_dir": ROOT / "workflows",
        "worker_poll_delay": 0.01,
        "secret_key": TEST_SECRET,
        # tests run many jobs of one user at once; the limits have tests of their own
        "max_concurrent_tasks_per_user": 1000,
        "submissions_per_minute": 100000,
        **extra,
    }
    return Settings(**values)


FIXTURE_WORKFLOWS = ROOT / "tests" / "fixtures" / "workflows"
StackFactory = Callable[..., contextlib.AbstractAsyncContextManager[Stack]]


@pytest.fixture
def make_stack(redis_url: str, simulator_url: str, tmp_path: Path) -> StackFactory:
    """Build a stack with settings overridden, e.g. `make_stack(max_jobs=1)`."""

    def build(**extra: Any) -> contextlib.AbstractAsyncContextManager[Stack]:
        comfyui_url = extra.pop("comfyui_url", simulator_url)
        return running_stack(stack_settings(redis_url, comfyui_url, tmp_path, **extra))

    return build


@pytest.fixture
async def slow_stack(redis_url: str, tmp_path: Path, comfyui_version: str) -> AsyncIterator[Stack]:
    """A stack whose sampler takes 30 ms a step: long enough to act while a job runs."""
    async with (
        run_simulator(SimulatorConfig(step_delay=0.03, comfyui_version=comfyui_version)) as comfy,
        running_stack(stack_settings(redis_url, comfy, tmp_path)) as stack,
    ):
        yield stack


@pytest.fixture
async def stack(redis_url: str, simulator_url: str, tmp_path: Path) -> AsyncIterator[Stack]:
    """Web app + arq worker on the real Redis and the simulator, on free ports."""
    async with running_stack(stack_settings(redis_url, simulator_url, tmp_path)) as s:
        yield s


@pytest.fixture
async def fake_stack(
    simulator_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Stack]:
    """The embedded default: web app + worker on an in-process fake Redis (no server needed)."""
    for name in ("REDIS_URL", "FORMY_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(
        comfyui_url=simulator_url,  # type: ignore[arg-type]
        host="127.0.0.1",
        port=free_port(),
        storage_dir=tmp_path,
        workflows_dir=ROOT / "workflows",
        worker_poll_delay=0.01,
        secret_key=TEST_SECRET,
        max_concurrent_tasks_per_user=1000,
        submissions_per_minute=100000,
    )
    assert settings.uses_embedded_redis()
    async with running_stack(settings) as s:
        yield s
