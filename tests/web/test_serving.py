"""Requests that never finish: slow headers and bodies time out; WebSockets and idle
keep-alive connections do not."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from formy_async.embedded import Stack

from ..conftest import TEST_SECRET, TOKEN, StackFactory, free_port
from ..helpers import api_session
from ..test_processes import process

pytestmark = pytest.mark.redis

BOUND = 0.5  # the header and body timeouts of these tests' servers, in seconds
#: the most a server may take past the bound to hang up (a loaded CI machine)
SLACK = 5.0


@pytest.fixture
async def strict(make_stack: StackFactory) -> AsyncIterator[Stack]:
    async with make_stack(header_timeout=BOUND, body_timeout=BOUND) as stack:
        yield stack


@contextlib.asynccontextmanager
async def _connection(
    stack_url: str,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    host, port = stack_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def _until_hung_up(reader: asyncio.StreamReader) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    started = time.monotonic()
    async with asyncio.timeout(BOUND + SLACK):
        data = await reader.read()
    return data, time.monotonic() - started


async def _answer(reader: asyncio.StreamReader) -> tuple[int, Any, float]:
    """The status and JSON body of the next response, and how long it took to come."""
    started = time.monotonic()
    async with asyncio.timeout(BOUND + SLACK):
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        body = await reader.readexactly(length)
    return int(head.split()[1]), json.loads(body), time.monotonic() - started


def _request(method: str, path: str, *headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: test", f"Authorization: Bearer {TOKEN}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _status_and_body(response: bytes) -> tuple[int, Any]:
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


async def test_a_client_that_stops_mid_request_line_is_disconnected_after_the_bound(
    strict: Stack,
) -> None:
    async with _connection(strict.url) as (reader, writer):
        writer.write(b"GET /heal")
        answer, waited = await _until_hung_up(reader)
    assert waited >= BOUND * 0.9
    assert _status_and_body(answer) == (
        408,
        {
            "error": {
                "code": "request_timeout",
                "message": f"the request headers did not arrive within {BOUND:g} s",
            }
        },
    )


async def test_a_client_that_sends_nothing_is_disconnected_after_the_bound(strict: Stack) -> None:
    async with _connection(strict.url) as (reader, _):
        answer, waited = await _until_hung_up(reader)
    assert waited >= BOUND * 0.9
    assert answer.startswith(b"HTTP/1.1 408 ")


async def test_headers_that_come_slowly_but_within_the_bound_are_served(
    make_stack: StackFactory,
) -> None:
    async with make_stack(header_timeout=3.0) as stack, _connection(stack.url) as (reader, writer):
        request = _request("GET", "/healthz", "Connection: close")
        for start in range(0, len(request), len(request) // 5 + 1):
            writer.write(request[start : start + len(request) // 5 + 1])
            await asyncio.sleep(0.2)  # the client is slow: that is the behaviour under test
        async with asyncio.timeout(10):
            answer = await reader.read()
    assert _status_and_body(answer) == (200, {"status": "ok"})


async def test_a_kept_alive_connection_idle_past_the_bound_serves_its_next_request(
    strict: Stack,
) -> None:
    async with _connection(strict.url) as (reader, writer):
        writer.write(_request("GET", "/healthz"))
        async with asyncio.timeout(10):
            await reader.readuntil(b'{"status": "ok"}')
        await asyncio.sleep(3 * BOUND)  # idle between requests: the keep-alive timeout applies
        writer.write(_request("GET", "/healthz", "Connection: close"))
        async with asyncio.timeout(10):
            answer = await reader.read()
    assert _status_and_body(answer) == (200, {"status": "ok"})


async def test_an_idle_websocket_outlives_the_bound(strict: Stack) -> None:
    async with api_session() as session, session.ws_connect(strict.url + "/ws") as ws:
        await asyncio.sleep(3 * BOUND)  # idle: what the header timeout must not cut
        await ws.send_json({"type": "subscribe", "job_id": "nope"})
        answer = await ws.receive_json(timeout=10)
    assert answer["error"]["code"] == "job_not_found"


async def test_a_json_body_that_stops_coming_gets_408(strict: Stack) -> None:
    async with _connection(strict.url) as (reader, writer):
        writer.write(
            _request("POST", "/api/jobs", "Content-Type: application/json", "Content-Length: 100")
        )
        writer.write(b'{"workflow": ')
        status, body, waited = await _answer(reader)
    assert (status, body["error"]["code"]) == (408, "request_timeout")
    assert waited >= BOUND * 0.9


async def test_an_upload_that_stops_coming_gets_408(strict: Stack) -> None:
    async with _connection(strict.url) as (reader, writer):
        writer.write(
            _request(
                "POST",
                "/api/uploads",
                "Content-Type: multipart/form-data; boundary=b",
                "Content-Length: 100000",
            )
        )
        writer.write(
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'
        )
        status, body, _ = await _answer(reader)
    assert (status, body["error"]["code"]) == (408, "request_timeout")


async def test_server_py_disconnects_a_client_that_stops_mid_headers(
    redis_url: str, simulator_url: str, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "COMFYUI_URL": simulator_url,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "FORMY_STORAGE_DIR": str(tmp_path),
        "SECRET_KEY": TEST_SECRET,
        "FORMY_HEADER_TIMEOUT": str(BOUND),
    }
    url = f"http://127.0.0.1:{port}"
    async with (
        process(sys.executable, "server.py", env=env, ready_url=url + "/healthz"),
        _connection(url) as (reader, writer),
    ):
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: te")
        answer, waited = await _until_hung_up(reader)
    assert waited >= BOUND * 0.9
    assert answer.startswith(b"HTTP/1.1 408 ")
