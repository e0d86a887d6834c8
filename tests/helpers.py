"""Test helpers: submit jobs and follow their events the way a browser does."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

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
