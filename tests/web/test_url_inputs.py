"""Image params given as URLs: fetched from a local file server (allowed by a test setting),
stored as the caller's uploads, and refused, with nothing stored, when they cannot be used."""

from __future__ import annotations

import asyncio
import io
import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from PIL import Image

from formy_async import webhook_urls

from ..conftest import StackFactory, free_port
from ..helpers import api_session, follow, get_json

#: what lets the stack fetch from the file server on 127.0.0.1
LOCAL = {"url_inputs_allow_http": True, "url_inputs_allow_private": True}


def png(size: tuple[int, int] = (32, 24)) -> bytes:
    data = io.BytesIO()
    Image.new("RGB", size, (200, 80, 20)).save(data, format="PNG")
    return data.getvalue()


class FileServer:
    """Serves a fox, a text file, a redirect, an error and a stall; counts the requests."""

    def __init__(self) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.requests = 0
        self.redirect_to = ""
        self.never = asyncio.Event()

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._count])
        app.router.add_get("/fox.png", self._fox)
        app.router.add_get("/notes.txt", self._notes)
        app.router.add_get("/gone.png", self._gone)
        app.router.add_get("/moved.png", self._moved)
        app.router.add_get("/stall.png", self._stall)
        return app

    @web.middleware
    async def _count(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests += 1
        response: web.StreamResponse = await handler(request)
        return response

    async def _fox(self, request: web.Request) -> web.Response:
        return web.Response(body=png(), content_type="image/png")

    async def _notes(self, request: web.Request) -> web.Response:
        return web.Response(text="not an image" * 10)

    async def _gone(self, request: web.Request) -> web.Response:
        return web.Response(status=404)

    async def _moved(self, request: web.Request) -> web.Response:
        raise web.HTTPFound(self.redirect_to)

    async def _stall(self, request: web.Request) -> web.Response:
        await self.never.wait()  # until the fetch gives up
        return web.Response(status=500)


@pytest.fixture
async def files() -> AsyncIterator[FileServer]:
    server = FileServer()
    runner = web.AppRunner(server.app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", server.port).start()
    yield server
    server.never.set()
    await runner.cleanup()


async def upscale(base: str, image: str, **params: Any) -> tuple[int, dict[str, Any]]:
    body = {"workflow": "upscale", "params": {"image": image, "scale": 1.5, **params}}
    async with api_session() as session, session.post(f"{base}/api/jobs", json=body) as r:
        return r.status, await r.json()


def stored_inputs(storage: Path) -> list[Path]:
    folder = storage / "inputs"
    return list(folder.iterdir()) if folder.exists() else []


async def test_an_image_url_is_fetched_and_stored_as_the_callers_upload(
    make_stack: StackFactory, files: FileServer
) -> None:
    async with make_stack(**LOCAL) as stack:
        status, job = await upscale(stack.url, f"{files.base}/fox.png")
        async with api_session() as session:
            events = await follow(session, stack.url, job["id"])
            async with session.get(f"{stack.url}/api/uploads/{job['params']['image']}") as r:
                fetched = Image.open(io.BytesIO(await r.read()))
    assert status == 202
    assert len(job["params"]["image"]) == 32  # the job names the upload, not the URL
    assert fetched.size == (32, 24)
    assert events[-1]["type"] == "done"
    assert events[-1]["outputs"][0]["width"] == 48


async def test_an_http_url_is_refused_unless_allowed(
    make_stack: StackFactory, files: FileServer, tmp_path: Path
) -> None:
    async with make_stack(url_inputs_allow_private=True) as stack:
        status, answer = await upscale(stack.url, f"{files.base}/fox.png")
    assert (status, answer["error"]["code"]) == (422, "image_url_invalid")
    assert answer["error"]["details"]["param"] == "image"
    assert files.requests == 0
    assert stored_inputs(tmp_path) == []


async def test_a_loopback_url_is_refused_before_any_request(
    make_stack: StackFactory, files: FileServer, tmp_path: Path
) -> None:
    async with make_stack(url_inputs_allow_http=True) as stack:
        status, answer = await upscale(stack.url, f"{files.base}/fox.png")
    assert (status, answer["error"]["code"]) == (422, "image_url_refused")
    assert "loopback" in answer["error"]["message"]
    assert files.requests == 0
    assert stored_inputs(tmp_path) == []


async def test_a_redirect_to_a_private_address_is_refused(
    make_stack: StackFactory, files: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the file server stands for a public host; 127.0.0.2 stays what it is, a loopback address
    real = webhook_urls.refusal
    ours = ipaddress.ip_address("127.0.0.1")
    monkeypatch.setattr(webhook_urls, "refusal", lambda ip: None if ip == ours else real(ip))
    files.redirect_to = f"http://127.0.0.2:{files.port}/fox.png"
    async with make_stack(url_inputs_allow_http=True) as stack:
        status, answer = await upscale(stack.url, f"{files.base}/moved.png")
    assert (status, answer["error"]["code"]) == (422, "image_url_refused")
    assert "127.0.0.2" in answer["error"]["message"]
    assert files.requests == 1  # the redirect itself, never its target
    assert stored_inputs(tmp_path) == []


async def test_a_redirect_is_followed_to_the_image(
    make_stack: StackFactory, files: FileServer
) -> None:
    files.redirect_to = "/fox.png"
    async with make_stack(**LOCAL) as stack:
        status, job = await upscale(stack.url, f"{files.base}/moved.png")
    assert status == 202
    assert len(job["params"]["image"]) == 32
    assert files.requests == 2


async def test_a_file_over_the_upload_limit_is_refused(
    make_stack: StackFactory, files: FileServer, tmp_path: Path
) -> None:
    async with make_stack(**LOCAL, upload_max_bytes=50) as stack:
        status, answer = await upscale(stack.url, f"{files.base}/fox.png")
    assert (status, answer["error"]["code"]) == (422, "image_url_too_large")
    assert stored_inputs(tmp_path) == []


async def test_a_file_that_is_not_an_image_is_refused(
    make_stack: StackFactory, files: FileServer, tmp_path: Path
) -> None:
    async with make_stack(**LOCAL) as stack:
        status, answer = await upscale(stack.url, f"{files.base}/notes.txt")
        async with api_session() as session:
            _, page = await get_json(session, f"{stack.url}/api/jobs")
    assert (status, answer["error"]["code"]) == (422, "image_url_not_an_image")
    assert stored_inputs(tmp_path) == []
    assert page["jobs"] == []  # nothing was queued


async def test_an_error_answer_names_its_status(
    make_stack: StackFactory, files: FileServer
) -> None:
    async with make_stack(**LOCAL) as stack:
        status, answer = await upscale(stack.url, f"{files.base}/gone.png")
    assert (status, answer["error"]["code"]) == (422, "image_url_unreachable")
    assert "HTTP 404" in answer["error"]["details"]["reason"]


async def test_a_server_too_slow_is_given_up_at_the_time_limit(
    make_stack: StackFactory, files: FileServer
) -> None:
    async with make_stack(**LOCAL, url_input_timeout=0.3) as stack:
        status, answer = await upscale(stack.url, f"{files.base}/stall.png")
    assert (status, answer["error"]["code"]) == (422, "image_url_unreachable")
    assert "0.3 s" in answer["error"]["message"]


async def test_the_other_params_are_checked_before_anything_is_fetched(
    make_stack: StackFactory, files: FileServer
) -> None:
    async with make_stack(**LOCAL) as stack:
        status, answer = await upscale(stack.url, f"{files.base}/fox.png", scale=99)
    assert (status, answer["error"]["code"]) == (422, "invalid_params")
    assert files.requests == 0


async def test_an_upload_id_still_works_as_before(make_stack: StackFactory) -> None:
    form = aiohttp.FormData()
    form.add_field("file", png(), filename="in.png", content_type="image/png")
    async with make_stack() as stack, api_session() as session:
        async with session.post(f"{stack.url}/api/uploads", data=form) as r:
            upload = await r.json()
        status, job = await upscale(stack.url, upload["id"])
    assert status == 202
    assert job["params"]["image"] == upload["id"]
