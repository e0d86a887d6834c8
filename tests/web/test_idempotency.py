"""Idempotent submissions: an `Idempotency-Key` makes a repeated submission answer one job."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from formy_async.embedded import Stack
from formy_async.web.app import create_app

from ..conftest import ADMIN_TOKEN, stack_settings
from ..helpers import api_session, follow, get_json

BODY = {
    "workflow": "text_to_image",
    "params": {"prompt": "a fox", "steps": 2, "width": 64, "height": 64},
}


async def post(
    session: aiohttp.ClientSession, base: str, body: Any, key: str | None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    headers = {"Idempotency-Key": key} if key is not None else {}
    async with session.post(f"{base}/api/jobs", json=body, headers=headers) as r:
        return r.status, await r.json(), dict(r.headers)


async def job_ids(session: aiohttp.ClientSession, base: str) -> list[str]:
    _, page = await get_json(session, f"{base}/api/jobs?limit=100")
    return [job["id"] for job in page["jobs"]]


@contextlib.asynccontextmanager
async def second_web_process(redis_url: str, comfyui_url: str, storage: Path) -> AsyncIterator[str]:
    """Another web process on the same Redis (it shares nothing else with the first)."""
    settings = stack_settings(redis_url, comfyui_url, storage)
    runner = web.AppRunner(create_app(settings))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", settings.port).start()
    try:
        yield f"http://127.0.0.1:{settings.port}"
    finally:
        await runner.cleanup()


async def test_the_same_key_and_body_answer_the_job_the_key_created(fake_stack: Stack) -> None:
    async with api_session() as session:
        status, first, first_headers = await post(session, fake_stack.url, BODY, "order-1")
        again, second, headers = await post(session, fake_stack.url, BODY, "order-1")
        listed = await job_ids(session, fake_stack.url)
    assert (status, again) == (202, 202)
    assert second["id"] == first["id"]
    assert headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first_headers
    assert listed == [first["id"]]


async def test_the_same_key_with_another_body_is_refused(fake_stack: Stack) -> None:
    other = {**BODY, "params": {**BODY["params"], "prompt": "a hare"}}  # type: ignore[dict-item]
    async with api_session() as session:
        await post(session, fake_stack.url, BODY, "order-2")
        status, answer, _ = await post(session, fake_stack.url, other, "order-2")
        listed = await job_ids(session, fake_stack.url)
    assert status == 422
    assert answer["error"]["code"] == "idempotency_key_reuse"
    assert len(listed) == 1


async def test_bodies_are_compared_as_json_not_as_bytes(fake_stack: Stack) -> None:
    reordered = {
        "params": dict(reversed(list(BODY["params"].items()))),
        "workflow": "text_to_image",
    }  # type: ignore[attr-defined]
    async with api_session() as session:
        _, first, _ = await post(session, fake_stack.url, BODY, "order-3")
        status, second, _ = await post(session, fake_stack.url, reordered, "order-3")
    assert (status, second["id"]) == (202, first["id"])


async def test_a_key_belongs_to_its_user(fake_stack: Stack) -> None:
    async with api_session() as alice, api_session(ADMIN_TOKEN) as root:
        _, mine, _ = await post(alice, fake_stack.url, BODY, "order-4")
        status, theirs, headers = await post(root, fake_stack.url, BODY, "order-4")
    assert status == 202
    assert theirs["id"] != mine["id"]
    assert "Idempotent-Replayed" not in headers


@pytest.mark.parametrize("key", ["", "k" * 256])
async def test_an_empty_or_overlong_key_is_refused(fake_stack: Stack, key: str) -> None:
    async with api_session() as session:
        status, answer, _ = await post(session, fake_stack.url, BODY, key)
        listed = await job_ids(session, fake_stack.url)
    assert (status, answer["error"]["code"]) == (400, "idempotency_key_invalid")
    assert listed == []


async def test_a_refused_submission_does_not_take_its_key(make_stack: Any) -> None:
    async with make_stack(max_concurrent_tasks_per_user=1) as stack, api_session() as session:
        await post(session, stack.url, BODY, None)  # the one job alice may have
        refused, _, _ = await post(session, stack.url, BODY, "order-5")
        await follow(session, stack.url, (await job_ids(session, stack.url))[0])
        status, answer, headers = await post(session, stack.url, BODY, "order-5")
    assert refused == 429
    assert status == 202
    assert "Idempotent-Replayed" not in headers
    assert answer["status"] == "pending"


@pytest.mark.redis
async def test_a_burst_on_two_web_processes_makes_one_job_and_one_prompt(
    stack: Stack, redis_url: str, simulator_url: str, tmp_path: Path
) -> None:
    key = uuid.uuid4().hex
    async with (
        second_web_process(redis_url, simulator_url, tmp_path) as other,
        api_session() as session,
    ):
        bases = [stack.url, other] * 5
        answers = await asyncio.gather(*(post(session, base, BODY, key) for base in bases))
        ids = {answer["id"] for _, answer, _ in answers}
        events = await follow(session, stack.url, ids.pop())
        listed = await job_ids(session, stack.url)
        _, history = await get_json(session, f"{simulator_url}/history")
    assert {status for status, _, _ in answers} == {202}
    assert ids == set()  # every answer named the same job
    assert sum(1 for _, _, h in answers if h.get("Idempotent-Replayed") == "true") == 9
    assert events[-1]["type"] == "done"
    assert len(listed) == 1
    assert len(history) == 1
