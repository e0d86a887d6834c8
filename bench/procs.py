"""The processes a row runs (web, worker, simulator, baselines), each its own subprocess.

Separate processes make RSS and CPU attributable and keep the load generator off their event
loops. RSS is read from /proc/<pid>/status (VmRSS), CPU time from /proc/<pid>/stat.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import ClassVar

import aiohttp

from .clients import SECRET_KEY

ROOT = Path(__file__).resolve().parent.parent
BENCH_WORKFLOWS = Path(__file__).resolve().parent / "workflows"
#: the interpreter of every process a row starts: the bench's own until `bench.run` sets the
#: production install's (bench.service)
PYTHON = sys.executable
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
LOG_DIR = Path(tempfile.mkdtemp(prefix="formy-bench-logs-"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_kb(pid: int) -> int:
    """Resident set size of a process, in KiB (VmRSS)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def redis_pid() -> int | None:
    """The local redis-server's pid, to attribute its CPU too (None if not visible)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == "redis-server":
                    return int(entry.name)
    return None


class Proc:
    """One subprocess, its log file, and how to stop it (SIGTERM, then SIGKILL)."""

    #: every process started, so that none outlives the run (see `stop_all`)
    started: ClassVar[list[Proc]] = []

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str] | None = None) -> None:
        Proc.started.append(self)
        self.name = name
        self.log_path = LOG_DIR / f"{name}-{time.monotonic_ns()}.log"
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        with open(self.log_path, "wb") as log:
            self.popen = subprocess.Popen(
                argv, cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def rss_kb(self) -> int:
        return rss_kb(self.pid)

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    async def stop(self, grace: float = 5.0) -> None:
        if not self.alive():
            return
        self.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        # a child's exit is seen by polling (no SIGCHLD handler in this loop)
        while self.alive() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        if self.alive():
            self.popen.kill()
            self.popen.wait(timeout=5)


async def stop_all() -> None:
    """Stop whatever a failed row left running."""
    for proc in Proc.started:
        await proc.stop(grace=2.0)
    Proc.started.clear()


async def wait_http(proc: Proc, url: str, within: float = 20.0) -> None:
    """Until `url` answers (any status), or raise with the process's last log lines."""
    deadline = time.monotonic() + within
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with session.get(url, timeout=aiohttp.ClientTimeout(total=1)):
                    return
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{proc.name} did not answer {url} within {within}s:\n{proc.tail()}")


def formy_env(redis_url: str, comfyui_url: str, **extra: str) -> dict[str, str]:
    """Environment of a web or worker process: production defaults except where a row says."""
    env = {
        "REDIS_URL": redis_url,
        "COMFYUI_URL": comfyui_url,
        "FORMY_WORKFLOWS_DIR": str(BENCH_WORKFLOWS),
        "FORMY_STORAGE_DIR": str(LOG_DIR / "storage"),
        "FORMY_LOG_FORMAT": "json",
        "HOST": "127.0.0.1",
        "SECRET_KEY": SECRET_KEY,
        # the load generator is one user: lift the per-user quotas (their checks still run)
        "FORMY_SUBMISSIONS_PER_MINUTE": "100000000",
        "FORMY_MAX_CONCURRENT_TASKS_PER_USER": "100000000",
    }
    env.update({k.upper(): v for k, v in extra.items()})
    return env


#: `--diagnose`: every web and worker runs with the stall monitor (bench.stalls), whose files
#: are listed here as (process name, path) until the row's results take them
DIAGNOSE = False
STALL_FILES: list[tuple[str, Path]] = []


def _diagnosed(role: str, argv: list[str] | None, env: dict[str, str]) -> list[str] | None:
    """The process's argv and env for the stall monitor, when `--diagnose` asks for it."""
    if not DIAGNOSE:
        return argv
    path = LOG_DIR / f"stalls-{role}-{time.monotonic_ns()}.jsonl"
    STALL_FILES.append((role, path))
    env["FORMY_BENCH_STALLS"] = str(path)
    return argv or [PYTHON, "-m", "bench.traced", role]


async def start_web(port: int, env: dict[str, str], argv: list[str] | None = None) -> Proc:
    """`python server.py` (or `argv`: the same process run another way), ready once it answers."""
    env = {**env, "PORT": str(port)}
    argv = _diagnosed("web", argv, env)
    proc = Proc("web", argv or [PYTHON, "server.py"], env)
    await wait_http(proc, f"http://127.0.0.1:{port}/healthz")
    return proc


async def start_worker(
    env: dict[str, str], redis_url: str, within: float = 20.0, argv: list[str] | None = None
) -> Proc:
    """A `formy-async worker` (or `argv`); ready once its heartbeat key appears in Redis."""
    env = dict(env)
    argv = _diagnosed("worker", argv, env)
    proc = Proc("worker", argv or [PYTHON, "-m", "formy_async", "worker"], env)
    await _worker_beats(proc, redis_url, within)
    return proc


async def start_web_worker(port: int, env: dict[str, str], redis_url: str) -> Proc:
    """`python server.py` with FORMY_WEB_WORKER: the whole service in one process."""
    proc = await start_web(port, {**env, "FORMY_WEB_WORKER": "true"})
    await _worker_beats(proc, redis_url, 20.0)
    return proc


async def _worker_beats(proc: Proc, redis_url: str, within: float) -> None:
    """Returns once a worker's heartbeat key is in Redis; raises if `proc` exits first."""
    from redis.asyncio import Redis

    redis = Redis.from_url(redis_url)
    try:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if not proc.alive():
                raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")
            if await redis.keys("formy:worker:*"):
                return
            await asyncio.sleep(0.1)
    finally:
        await redis.aclose()
    raise RuntimeError(f"{proc.name}'s worker did not start within {within}s:\n{proc.tail()}")


async def start_module(name: str, module: str, port: int, *args: str, path: str = "/") -> Proc:
    """A bench/ helper server (`python -m bench.<module> --port P …`), ready when it answers."""
    proc = Proc(name, [PYTHON, "-m", f"bench.{module}", "--port", str(port), *args])
    await wait_http(proc, f"http://127.0.0.1:{port}{path}")
    return proc


async def start_simulator(port: int, step_delay: float = 0.0) -> Proc:
    return await start_module(
        "simulator", "sim", port, "--step-delay", str(step_delay), path="/system_stats"
    )


#: the most prompts one ComfyUI backend may hold at once (FORMY's `#capacity=` limit)
BACKEND_CAPACITY = 64


async def start_emitter(port: int, sessions: int = 1) -> tuple[Proc, str]:
    """The bench ComfyUI on enough ports for `sessions` at once; (process, COMFYUI_URL).

    The worker holds at most `capacity` prompts per backend, so one emitter process listens on
    one port per 64 sessions and each port is listed as a backend.
    """
    ports = [port] + [free_port() for _ in range((sessions - 1) // BACKEND_CAPACITY)]
    extra = [arg for p in ports[1:] for arg in ("--port", str(p))]
    proc = await start_module("emitter", "emitter", port, *extra, path="/system_stats")
    urls = ",".join(f"http://127.0.0.1:{p}#capacity={BACKEND_CAPACITY}" for p in ports)
    return proc, urls


async def start_listener(
    redis_url: str, out: Path, within: float = 20.0, pattern: str | None = None
) -> Proc:
    """bench.listener, writing to `out` (of the product's events, or `pattern`'s); returned
    once it is subscribed."""
    argv = [PYTHON, "-m", "bench.listener", "--redis", redis_url, "--out", str(out)]
    argv += ["--pattern", pattern] if pattern else []
    proc = Proc("listener", argv)
    deadline = time.monotonic() + within
    while "ready" not in proc.tail(1):
        if not proc.alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the pub/sub listener did not start:\n{proc.tail()}")
        await asyncio.sleep(0.05)
    return proc


@contextlib.asynccontextmanager
async def running(*procs: Proc) -> AsyncIterator[None]:
    try:
        yield
    finally:
        for proc in procs:
            await proc.stop()


#: the wall-clock windows rows measured in (every CpuMeter's start → stop): `--diagnose` tells
#: the stalls inside them from those of start-up, set-up and teardown
WINDOWS: list[tuple[float, float]] = []


class CpuMeter:
    """CPU seconds each named process used between `start()` and `stop()`, as % of one core."""

    def __init__(self, pids: Mapping[str, int | None]) -> None:
        self.pids = {name: pid for name, pid in pids.items() if pid is not None}
        self.begin: dict[str, float] = {}
        self.t0 = self.wall0 = 0.0

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.wall0 = time.time()
        self.begin = {name: self._cpu(pid) for name, pid in self.pids.items()}

    def stop(self) -> dict[str, float]:
        WINDOWS.append((self.wall0, time.time()))
        elapsed = max(time.monotonic() - self.t0, 1e-9)
        return {
            name: round(100 * (self._cpu(pid) - self.begin[name]) / elapsed, 1)
            for name, pid in self.pids.items()
        }

    @staticmethod
    def _cpu(pid: int) -> float:
        try:
            return cpu_seconds(pid)
        except OSError:
            return 0.0
