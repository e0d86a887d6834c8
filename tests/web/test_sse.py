"""Server-Sent Events on `GET /api/jobs/{id}/events`: the log, then live events, then the end."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from fakeredis import FakeAsyncRedis, FakeServer
from redis.asyncio import Redis

from formy_async.embedded import Stack
from formy_async.models import Done, Job, Submitted
from formy_async.store.hub import RESYNC, EventHub
from formy_async.store.jobs import JobStore
from formy_async.web.sse import EventStream

from ..conftest import ADMIN_TOKEN, TOKEN, StackFactory, free_port
from ..helpers import api_session, follow, get_json, submit, wait_until

STREAM = {"Accept": "text/event-stream"}


@pytest.fixture
def unused_port() -> int:
    return free_port()


SLOW = {"prompt": "a fox", "steps": 30, "width": 64, "height": 64}


@dataclass
class Received:
    """What a stream sent: each event's SSE id and type with its JSON, and its comments."""

    status: int
    frames: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    retry: int | None = None

    @property
    def seqs(self) -> list[int]:
        return [event["seq"] for _, _, event in self.frames]


async def read_stream(response: aiohttp.ClientResponse, received: Received) -> None:
    fields: dict[str, str] = {}
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith(":"):
            received.comments.append(line[1:].strip())
        elif line:
            name, _, value = line.partition(": ")
            fields[name] = value
        elif "retry" in fields:
            received.retry = int(fields.pop("retry"))
        elif fields:
            received.frames.append((int(fields["id"]), fields["event"], json.loads(fields["data"])))
            fields = {}


async def stream(
    session: aiohttp.ClientSession, base: str, job_id: str, query: str = "", **headers: str
) -> Received:
    """Read the job's stream to its end (the server closes it)."""
    url = f"{base}/api/jobs/{job_id}/events{query}"
    async with asyncio.timeout(30), session.get(url, headers={**STREAM, **headers}) as r:
        received = Received(r.status)
        if r.status == 200:
            assert r.headers["Content-Type"].startswith("text/event-stream")
            await read_stream(r, received)
        return received


async def test_a_stream_sends_every_event_then_ends_after_the_final_one(slow_stack: Stack) -> None:
    async with api_session() as session:
        job = await submit(session, slow_stack.url, **SLOW)
        received = await stream(session, slow_stack.url, job["id"])
        _, log = await get_json(session, f"{slow_stack.url}/api/jobs/{job['id']}/events")
    assert received.seqs == list(range(1, len(log) + 1))
    assert [(i, t) for i, t, _ in received.frames] == [(e["seq"], e["type"]) for e in log]
    assert received.frames[-1][1] == "done"
    assert len(log) > 30  # the live progress events came through the stream


async def test_a_stream_resumes_after_last_event_id_over_after(fake_stack: Stack) -> None:
    async with api_session() as session:
        job = await submit(session, fake_stack.url, prompt="a fox", steps=2, width=64, height=64)
        events = await follow(session, fake_stack.url, job["id"])
        received = await stream(
            session, fake_stack.url, job["id"], "?after=1", **{"Last-Event-ID": "3"}
        )
    assert received.seqs == [e["seq"] for e in events if e["seq"] > 3]


async def test_a_stream_starts_after_the_after_query(fake_stack: Stack) -> None:
    async with api_session() as session:
        job = await submit(session, fake_stack.url, prompt="a fox", steps=2, width=64, height=64)
        events = await follow(session, fake_stack.url, job["id"])
        received = await stream(session, fake_stack.url, job["id"], "?after=2")
    assert received.seqs == [e["seq"] for e in events][2:]
    assert received.retry is not None


async def test_a_finished_job_with_nothing_left_answers_204(fake_stack: Stack) -> None:
    async with api_session() as session:
        job = await submit(session, fake_stack.url, prompt="a fox", steps=2, width=64, height=64)
        last = (await follow(session, fake_stack.url, job["id"]))[-1]["seq"]
        received = await stream(session, fake_stack.url, job["id"], **{"Last-Event-ID": str(last)})
    assert received.status == 204


async def test_without_the_accept_header_the_route_answers_json(fake_stack: Stack) -> None:
    async with api_session() as session:
        job = await submit(session, fake_stack.url, prompt="a fox", steps=2, width=64, height=64)
        async with session.get(f"{fake_stack.url}/api/jobs/{job['id']}/events") as r:
            body = await r.json()
    assert r.content_type == "application/json"
    assert body[0]["type"] == "submitted"


async def test_another_users_job_has_no_stream(fake_stack: Stack) -> None:
    async with api_session(ADMIN_TOKEN) as root:
        job = await submit(root, fake_stack.url, prompt="a fox", steps=2, width=64, height=64)
    async with api_session() as alice:
        received = await stream(alice, fake_stack.url, job["id"])
    assert received.status == 404


async def test_an_eventsource_may_send_its_token_in_the_query(fake_stack: Stack) -> None:
    async with api_session() as session:
        job = await submit(session, fake_stack.url, prompt="a fox", steps=2, width=64, height=64)
    async with aiohttp.ClientSession() as anonymous:
        received = await stream(anonymous, fake_stack.url, job["id"], f"?token={TOKEN}")
        refused = await stream(anonymous, fake_stack.url, job["id"])
    assert received.frames[-1][1] == "done"
    assert refused.status == 401


async def test_an_idle_stream_gets_heartbeat_comments(
    make_stack: StackFactory, unused_port: int
) -> None:
    # no ComfyUI answers: the job waits, and its stream idles until it is cancelled
    down = f"http://127.0.0.1:{unused_port}"
    async with make_stack(sse_heartbeat=0.05, comfyui_url=down) as stack, api_session() as session:
        job = await submit(session, stack.url, **SLOW)
        url = f"{stack.url}/api/jobs/{job['id']}/events"
        async with session.get(url, headers=STREAM) as response:
            received = Received(response.status)
            reading = asyncio.create_task(read_stream(response, received))
            await wait_until(lambda: _has_comment(received))
            await session.post(f"{stack.url}/api/jobs/{job['id']}/cancel")
            await asyncio.wait_for(reading, 10)
    assert "keep-alive" in received.comments
    assert received.frames[-1][1] == "cancelled"


async def _has_comment(received: Received) -> bool:
    return bool(received.comments)


async def test_a_stream_outlives_the_header_and_body_timeouts(make_stack: StackFactory) -> None:
    async with (
        make_stack(header_timeout=0.2, body_timeout=0.2, sse_heartbeat=0.05) as stack,
        api_session() as session,
    ):
        job = await submit(session, stack.url, **{**SLOW, "steps": 150})
        started = asyncio.get_running_loop().time()
        received = await stream(session, stack.url, job["id"])
        lasted = asyncio.get_running_loop().time() - started
    assert lasted > 0.6  # three times either timeout
    assert received.frames[-1][1] == "done"


@pytest.mark.redis
async def test_a_stream_loses_nothing_when_the_hubs_connection_is_cut(
    slow_stack: Stack, redis: Redis
) -> None:
    async with api_session() as session:
        job = await submit(session, slow_stack.url, **{**SLOW, "steps": 60})
        url = f"{slow_stack.url}/api/jobs/{job['id']}/events"
        async with session.get(url, headers=STREAM) as response:
            received = Received(response.status)
            reading = asyncio.create_task(read_stream(response, received))
            await wait_until(lambda: _at_least(received, 5))
            await redis.client_kill_filter(_type="pubsub")
            await asyncio.wait_for(reading, 30)
        _, log = await get_json(session, url)
    assert received.seqs == list(range(1, len(log) + 1))
    assert received.frames[-1][1] == "done"


async def _at_least(received: Received, count: int) -> bool:
    return len(received.frames) >= count


class _Written:
    """Stands in for the HTTP response: what the stream wrote to it."""

    def __init__(self) -> None:
        self.data = b""

    async def write(self, data: bytes) -> None:
        self.data += data


async def test_a_resync_of_the_hub_sends_what_only_the_log_holds() -> None:
    redis = FakeAsyncRedis(server=FakeServer())
    store = JobStore(redis, ttl=60)
    job = Job(id="j1", workflow="text_to_image", params={})
    await store.create(job, Submitted(job_id=job.id, workflow=job.workflow))
    sink = EventStream(EventHub(redis), store, job.id, 0, send_timeout=5)
    written = _Written()
    running = asyncio.create_task(sink.run(written, 30, asyncio.Event()))  # type: ignore[arg-type]
    await wait_until(lambda: _contains(written, b"id: 1\n"))
    job.status = "done"
    await store.append(job, Done(job_id=job.id, outputs=[]))  # published to no hub: missed
    sink(job.id, RESYNC, "")  # the hub's pub/sub came back
    await asyncio.wait_for(running, 5)
    await redis.aclose()
    assert b"id: 2\nevent: done\n" in written.data


async def _contains(written: _Written, part: bytes) -> bool:
    return part in written.data
