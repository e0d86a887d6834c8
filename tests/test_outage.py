"""A Redis outage seen from the web process: answers at once, does nothing late, recovers."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from .helpers import api_session, get_json, submit
from .redis_server import redis_server
from .test_faults import web_only

pytestmark = pytest.mark.redis

#: what "at once" means here: the web's Redis budget plus room for a loaded machine
PROMPTLY = 4.0


async def timed(session: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> Any:
    started = time.monotonic()
    async with asyncio.timeout(PROMPTLY + 5), session.request(method, url, **kw) as r:
        return r.status, r.headers, await r.json(), time.monotonic() - started


def a_submission() -> dict[str, Any]:
    return {"workflow": "slow", "params": {"steps": 1}}


async def test_every_request_answers_503_at_once_while_redis_is_down(
    simulator_url: str, tmp_path: Path
) -> None:
    async with (
        redis_server(tmp_path) as redis,
        web_only(redis.url, simulator_url, tmp_path) as base,
        api_session() as session,
    ):
        job = await submit(session, base, "slow", steps=1)
        await redis.stop(signal.SIGKILL)
        answers = [
            await timed(session, "POST", f"{base}/api/jobs", json=a_submission()),
            await timed(session, "GET", f"{base}/api/jobs/{job['id']}"),
            await timed(session, "GET", f"{base}/api/jobs"),
            await timed(session, "GET", f"{base}/api/jobs/{job['id']}/events"),
        ]
    for status, headers, body, seconds in answers:
        assert (status, body["error"]["code"]) == (503, "redis_unavailable")
        assert int(headers["Retry-After"]) >= 1
        assert seconds < PROMPTLY


async def test_a_submission_answered_503_during_a_pause_never_happens_later(
    simulator_url: str, tmp_path: Path
) -> None:
    async with (
        redis_server(tmp_path) as redis,
        web_only(redis.url, simulator_url, tmp_path) as base,
        api_session() as session,
    ):
        await submit(session, base, "slow", steps=1)  # the web's connections are open
        redis.pause()
        status, _, body, seconds = await timed(
            session, "POST", f"{base}/api/jobs", json=a_submission()
        )
        redis.resume()
        async with Redis.from_url(redis.url) as direct:
            await direct.ping()  # the paused server has run what waited in its sockets
            queued = await direct.zcard("arq:queue")
        _, listing = await get_json(session, f"{base}/api/jobs")
    assert (status, body["error"]["code"]) == (503, "redis_unavailable")
    assert seconds < PROMPTLY
    assert (queued, len(listing["jobs"])) == (1, 1)  # only the submission answered 202


async def test_the_web_process_serves_again_by_itself_when_redis_is_back(
    simulator_url: str, tmp_path: Path
) -> None:
    async with (
        redis_server(tmp_path) as redis,
        web_only(redis.url, simulator_url, tmp_path) as base,
        api_session() as session,
    ):
        await submit(session, base, "slow", steps=1)
        await redis.stop(signal.SIGKILL)
        down, *_ = await timed(session, "GET", f"{base}/api/jobs")
        await redis.start()
        up, _, listing, _ = await timed(session, "GET", f"{base}/api/jobs")
    assert (down, up) == (503, 200)
    assert len(listing["jobs"]) == 1  # its append-only file kept the job


async def test_a_websocket_subscription_during_an_outage_is_told_and_stays_open(
    simulator_url: str, tmp_path: Path
) -> None:
    async with (
        redis_server(tmp_path) as redis,
        web_only(redis.url, simulator_url, tmp_path) as base,
        api_session() as session,
    ):
        job = await submit(session, base, "slow", steps=1)
        async with session.ws_connect(f"{base}/ws") as ws:
            await redis.stop(signal.SIGKILL)
            await ws.send_json({"type": "subscribe", "job_id": job["id"], "after": 0})
            async with asyncio.timeout(PROMPTLY):
                answer = await ws.receive_json()
            await ws.send_json({"type": "unsubscribe", "job_id": job["id"]})
            async with asyncio.timeout(PROMPTLY):
                still_open = await ws.receive_json()
    assert (answer["type"], answer["error"]["code"]) == ("error", "redis_unavailable")
    assert still_open["type"] == "unsubscribed"
