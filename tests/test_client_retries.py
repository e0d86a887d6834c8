"""The client's submissions carry an Idempotency-Key: one whose answer is lost is sent again and
still makes one job."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from formy_async import FormyClient
from formy_async.embedded import Stack

from .conftest import TOKEN, free_port
from .helpers import api_session, get_json


class LosingProxy:
    """Passes requests on to the stack; cuts the connection instead of the first N answers."""

    def __init__(self, target: str, lose: int) -> None:
        self.target = target
        self.lose = lose
        self.keys: list[str | None] = []
        self.port = free_port()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host",)}
        self.keys.append(request.headers.get("Idempotency-Key"))
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                request.method,
                self.target + request.rel_url.path_qs,
                data=await request.read(),
                headers=headers,
            ) as answer,
        ):
            body = await answer.read()
        if self.lose > 0:  # done on the server, and the answer never arrives
            self.lose -= 1
            assert request.transport is not None
            request.transport.abort()
        return web.Response(body=body, status=answer.status, content_type=answer.content_type)


@pytest.fixture
async def proxy(fake_stack: Stack) -> AsyncIterator[LosingProxy]:
    losing = LosingProxy(fake_stack.url, lose=1)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", losing.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", losing.port).start()
    yield losing
    await runner.cleanup()


async def test_a_submission_whose_answer_was_lost_is_sent_again_and_makes_one_job(
    fake_stack: Stack, proxy: LosingProxy
) -> None:
    async with FormyClient(f"http://127.0.0.1:{proxy.port}", token=TOKEN) as client:
        job = await client.submit("text_to_image", prompt="a fox", steps=2, width=64, height=64)
    async with api_session() as session:
        _, page = await get_json(session, f"{fake_stack.url}/api/jobs")
    assert len(proxy.keys) == 2
    assert proxy.keys[0] is not None and proxy.keys[0] == proxy.keys[1]
    assert [j["id"] for j in page["jobs"]] == [job.id]


async def test_each_submission_has_a_key_of_its_own(fake_stack: Stack, proxy: LosingProxy) -> None:
    proxy.lose = 0
    async with FormyClient(f"http://127.0.0.1:{proxy.port}", token=TOKEN) as client:
        first = await client.submit("text_to_image", prompt="a fox", steps=2, width=64, height=64)
        second = await client.submit("text_to_image", prompt="a fox", steps=2, width=64, height=64)
    assert first.id != second.id
    assert len(set(proxy.keys)) == 2
