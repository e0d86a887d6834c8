"""Test helpers: submit jobs and follow their events the way a browser does."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from PIL import Image

FINAL = {"done", "failed", "cancelled"}


def api_session(token: str | None = None) -> aiohttp.ClientSession:
    """A session that calls the API as alice (or with `token`)."""
    from .conftest import TOKEN

    return aiohttp.ClientSession(headers={"Authorization": f"Bearer {token or TOKEN}"})


CONTROL = {"subscribed", "unsubscribed", "error", "overflow"}


async def submit(
    session: aiohttp.ClientSession, base: str, workflow: str = "text_to_image", **params: Any
) -> dict[str, Any]:
    async with session.post(f"{base}/api/jobs", json={"workflow": workflow, "params": params}) as r:
        body: dict[str, Any] = await r.json()
        assert r.status == 202, body
        return body


async def follow(
    session: aiohttp.ClientSession, base: str, job_id: str, after: int = 0, timeout: float = 30
) -> list[dict[str, Any]]:
    """Every event of the job after `after`, over the WebSocket, until its final event."""
    events: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout), session.ws_connect(f"{base}/ws") as ws:
        await ws.send_json({"type": "subscribe", "job_id": job_id, "after": after})
        async for message in ws:
            data = message.json()
            if data["type"] in CONTROL:
                assert data["type"] != "error", data
                continue
            events.append(data)
            if data["type"] in FINAL:
                break
    return events


async def get_json(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url) as r:
        return r.status, await r.json()


async def wait_until(
    condition: Callable[[], Awaitable[bool]], *, timeout: float = 10, every: float = 0.01
) -> None:
    """Return as soon as `condition()` holds; fail the test after `timeout` seconds."""
    async with asyncio.timeout(timeout):
        while True:  # another process changes what it reads: there is nothing to wait on
            if await condition():
                return
            await asyncio.sleep(every)


async def job_status(session: aiohttp.ClientSession, base: str, job_id: str) -> str:
    status: str = (await get_json(session, f"{base}/api/jobs/{job_id}"))[1]["status"]
    return status


async def upload_image(session: aiohttp.ClientSession, base: str, image: Image.Image) -> str:
    """Upload `image` as a PNG; its upload id."""
    data = io.BytesIO()
    image.save(data, format="PNG")
    form = aiohttp.FormData()
    form.add_field("file", data.getvalue(), filename="in.png", content_type="image/png")
    async with session.post(f"{base}/api/uploads", data=form) as r:
        body: dict[str, Any] = await r.json()
        assert r.status == 201, body
        return str(body["id"])


def traced_session() -> tuple[aiohttp.ClientSession, list[str]]:
    """A session that notes every request it makes, as `METHOD /path`, in the list returned."""
    requests: list[str] = []

    async def noted(_: Any, __: Any, params: Any) -> None:
        requests.append(f"{params.method} {params.url.path}")

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(noted)
    return aiohttp.ClientSession(trace_configs=[trace]), requests
