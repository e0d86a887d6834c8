"""Real sockets that stop reading: what they may have unsent is bounded, then they are told or
closed."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import select
import socket
import struct
import sys
import termios
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from redis.asyncio import Redis

from formy_async.models import Job, Progress, Submitted
from formy_async.store.jobs import JobStore
from formy_async.web.app import create_app
from formy_async.web.context import HUB, SETTINGS
from formy_async.web.serving import app_runner
from formy_async.web.ws import Connection

from ..conftest import TOKEN, stack_settings
from ..helpers import wait_until

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(sys.platform != "linux", reason="reads the kernel's send queue (Linux)"),
]

QUEUE_SIZE = 10
SEND_BUFFER = 16 * 1024
#: events of ~2 KB: 400 of them are far more than any buffer on the way holds
EVENTS, NODE = 400, "n" * 2000


@dataclass
class Served:
    app: web.Application
    runner: web.AppRunner


@contextlib.asynccontextmanager
async def _serving(settings: Any) -> AsyncIterator[Served]:
    app = create_app(settings)
    runner = app_runner(app, settings)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.host, settings.port).start()
        yield Served(app, runner)
    finally:
        await runner.cleanup()


Serve = Callable[..., contextlib.AbstractAsyncContextManager[Served]]


@pytest.fixture
def serve(redis_url: str, simulator_url: str, tmp_path: Path) -> Serve:
    """The web app alone (no worker: the tests write the events), with settings overridden."""

    def build(**extra: Any) -> contextlib.AbstractAsyncContextManager[Served]:
        settings = stack_settings(
            redis_url,
            simulator_url,
            tmp_path,
            ws_queue_size=QUEUE_SIZE,
            ws_send_buffer=SEND_BUFFER,
            **extra,
        )
        return _serving(settings)

    return build


def _frame(text: str) -> bytes:
    """A masked client text frame (RFC 6455 5.2); the mask of zeros leaves the payload as is."""
    payload = text.encode()
    assert len(payload) < 126
    return bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


async def _stalled_client(app: web.Application) -> socket.socket:
    """A WebSocket client whose receive buffer is tiny and that reads nothing after the upgrade."""
    return await asyncio.to_thread(_upgraded, app[SETTINGS].host, app[SETTINGS].port)


def _upgraded(host: str, port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting: the window
    sock.settimeout(10)
    sock.connect((host, port))
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    sock.sendall(
        f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Authorization: Bearer {TOKEN}\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)  # byte by byte: nothing past the headers is taken
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


async def _job(redis: Redis, job_id: str = "j") -> tuple[JobStore, Job]:
    store = JobStore(redis, ttl=600)
    job = Job(id=job_id, user="alice", workflow="w", params={})
    await store.create(job, Submitted(job_id=job_id, workflow="w"))
    return store, job


async def _subscribed(app: web.Application, sock: socket.socket, job_id: str) -> Connection:
    """Subscribe `sock` to the job; the server's connection for it, once it follows the job."""
    sock.sendall(_frame(json.dumps({"type": "subscribe", "job_id": job_id, "after": 0})))
    hub = app[HUB]

    async def following() -> bool:
        return bool(hub.sinks.get(job_id))

    await wait_until(following)
    conn = next(iter(hub.sinks[job_id]))
    assert isinstance(conn, Connection)
    return conn


async def _flood(store: JobStore, job: Job) -> None:
    for _ in range(EVENTS):
        await store.append(job, Progress(job_id=job.id, node=NODE, value=0, max=1))


def _unsent(runner: web.AppRunner) -> int:
    """Bytes the server holds for its one connection: its transport's buffer and the kernel's."""
    assert runner.server is not None
    (protocol,) = runner.server.connections
    assert protocol.transport is not None
    fd = protocol.transport.get_extra_info("socket").fileno()
    queued = struct.unpack("i", fcntl.ioctl(fd, termios.TIOCOUTQ, b"\0\0\0\0"))[0]
    return int(queued) + protocol.transport.get_write_buffer_size()


def _closed_by_peer(sock: socket.socket) -> bool:
    poller = select.poll()
    poller.register(sock, select.POLLRDHUP | select.POLLHUP | select.POLLERR)
    return any(
        events & (select.POLLRDHUP | select.POLLHUP | select.POLLERR)
        for _, events in poller.poll(0)
    )


@dataclass
class Stalled:
    """A client subscribed to a job, that reads nothing, and the server's connection for it."""

    served: Served
    sock: socket.socket
    store: JobStore
    job: Job
    conn: Connection

    async def overflowed(self) -> bool:
        return self.job.id not in self.conn.last_seq  # it dropped the subscription

    async def closed(self) -> bool:
        return _closed_by_peer(self.sock)


@contextlib.asynccontextmanager
async def _stalled(serve: Serve, redis: Redis, send_timeout: float) -> AsyncIterator[Stalled]:
    async with serve(ws_send_timeout=send_timeout) as served:
        sock = await _stalled_client(served.app)
        with contextlib.closing(sock):
            store, job = await _job(redis)
            conn = await _subscribed(served.app, sock, job.id)
            yield Stalled(served, sock, store, job, conn)


async def test_a_socket_that_reads_nothing_is_closed_after_the_send_timeout(
    serve: Serve, redis: Redis
) -> None:
    async with _stalled(serve, redis, send_timeout=1.0) as client:
        started = time.monotonic()
        await _flood(client.store, client.job)
        await wait_until(client.closed, timeout=15)
        assert time.monotonic() - started >= 1.0
        assert len(client.conn.outbox or ()) <= QUEUE_SIZE


def _read_messages(sock: socket.socket, until: str, deadline: float) -> list[dict[str, Any]]:
    """Server text frames (unmasked) as JSON, up to the first of type `until`."""
    sock.settimeout(max(0.1, deadline - time.monotonic()))
    stream, messages = sock.makefile("rb"), []
    while not messages or messages[-1].get("type") != until:
        first, length = stream.read(2)
        size = length & 0x7F
        if size == 126:
            size = struct.unpack("!H", stream.read(2))[0]
        elif size == 127:
            size = struct.unpack("!Q", stream.read(8))[0]
        payload = stream.read(size)
        if first & 0x0F == 0x1:
            messages.append(json.loads(payload))
    return messages


async def test_a_reader_that_stalls_gets_an_overflow_notice_after_little_stale_data(
    serve: Serve, redis: Redis
) -> None:
    async with _stalled(serve, redis, send_timeout=30.0) as client:
        await _flood(client.store, client.job)
        await wait_until(client.overflowed, timeout=15)
        assert len(client.conn.outbox or ()) <= QUEUE_SIZE
        deadline = time.monotonic() + 15
        messages = await asyncio.to_thread(_read_messages, client.sock, "overflow", deadline)
    seqs = [m["seq"] for m in messages if "seq" in m]
    assert seqs == list(range(1, len(seqs) + 1))  # in order, none missing
    assert messages[-1] == {"type": "overflow", "last_seq": {client.job.id: seqs[-1]}}
    assert len(seqs) < EVENTS / 4  # the stale events it still gets are few


async def test_what_a_stalled_socket_holds_unsent_is_bounded(serve: Serve, redis: Redis) -> None:
    async with _stalled(serve, redis, send_timeout=30.0) as client:
        await _flood(client.store, client.job)
        await wait_until(client.overflowed, timeout=15)
        unsent = _unsent(client.served.runner)
    # the kernel's share (which Linux doubles), the transport's, one writer chunk, one frame
    assert unsent <= 4 * SEND_BUFFER + len(NODE) + 512
