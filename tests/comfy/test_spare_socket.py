"""A worker's next prompt finds its socket open already: a fresh client id of its own."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from formy_async.comfy import sockets
from formy_async.comfy.client import ComfyClient, new_prompt_id
from formy_async.comfy.messages import ExecutionStart
from formy_async.simulator import SimulatorConfig, run_simulator
from formy_async.worker.context import WorkerContext

from ..conftest import StackFactory


@pytest.fixture
async def comfy() -> AsyncIterator[ComfyClient]:
    async with (
        run_simulator(SimulatorConfig(step_delay=0.001)) as url,
        aiohttp.ClientSession() as http,
    ):
        client = ComfyClient(url, http, spare_socket=True)
        yield client
        await client.aclose()


def graph() -> dict[str, Any]:
    colour = random.randrange(0xFFFFFF)
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1,
                                                     "color": colour}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "s"}},
    }  # fmt: skip


async def run_one(comfy: ComfyClient) -> str:
    """Queue a prompt on a socket from `socket_ahead` and follow it to its end; its client id."""
    client_id, opening = comfy.socket_ahead()
    async for _ in comfy.run(graph(), new_prompt_id(), await opening):
        pass
    return client_id


async def test_the_next_prompts_socket_is_open_before_it_is_asked_for(comfy: ComfyClient) -> None:
    first_id = await run_one(comfy)
    await asyncio.sleep(0.2)  # the spare's handshake, done meanwhile
    second_id, second = comfy.socket_ahead()
    assert second.done() and second_id != first_id
    assert (await second).client_id == second_id
    await (await second).aclose()


async def test_no_socket_is_opened_ahead_before_a_prompt_is_queued(comfy: ComfyClient) -> None:
    _, opening = comfy.socket_ahead()
    await (await opening).aclose()
    assert comfy._spare is None


async def test_each_prompt_gets_its_own_messages_on_its_own_socket(comfy: ComfyClient) -> None:
    for _ in range(3):
        client_id, opening = comfy.socket_ahead()
        socket = await opening
        prompt_id = new_prompt_id()
        seen = [m async for m in comfy.run(graph(), prompt_id, socket)]
        assert socket.client_id == client_id
        assert {m.prompt_id for m in seen} == {prompt_id}
        assert any(isinstance(m, ExecutionStart) for m in seen)


async def test_a_spare_kept_too_long_is_closed_and_not_used(
    comfy: ComfyClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    await run_one(comfy)
    spare = comfy._spare
    assert spare is not None
    stale = await spare.opening
    monkeypatch.setattr(sockets, "SPARE_FOR", 0.0)
    client_id, opening = comfy.socket_ahead()
    assert client_id != spare.client_id
    await (await opening).aclose()
    await asyncio.sleep(0.1)
    assert stale.ws.closed


async def test_a_spare_the_server_closed_is_not_used(comfy: ComfyClient) -> None:
    await run_one(comfy)
    spare = comfy._spare
    assert spare is not None
    await (await spare.opening).ws.close()
    client_id, opening = comfy.socket_ahead()
    assert client_id != spare.client_id
    fresh = await opening
    assert not fresh.ws.closed
    await fresh.aclose()


async def test_closing_the_client_closes_its_spare(comfy: ComfyClient) -> None:
    await run_one(comfy)
    spare = comfy._spare
    assert spare is not None
    await comfy.aclose()
    assert spare.opening.cancelled() or (await spare.opening).ws.closed


async def test_without_spares_nothing_is_opened_ahead() -> None:
    async with run_simulator(SimulatorConfig()) as url, aiohttp.ClientSession() as http:
        client = ComfyClient(url, http)
        _, opening = client.socket_ahead()
        await (await opening).aclose()
        assert client._spare is None


async def test_sockets_of_their_own_leave_http_calls_their_kept_alive_connection() -> None:
    opened: list[None] = []
    tracing = aiohttp.TraceConfig()

    async def connected(*_: Any) -> None:
        opened.append(None)

    tracing.on_connection_create_end.append(connected)
    async with (
        run_simulator(SimulatorConfig(step_delay=0.001)) as url,
        aiohttp.ClientSession(trace_configs=[tracing]) as http,
        aiohttp.ClientSession() as own,
    ):
        client = ComfyClient(url, http, spare_socket=True, sockets=own)
        await run_one(client)  # its spare for the next prompt opens meanwhile
        await asyncio.sleep(0.2)
        before = len(opened)
        await client.system_stats()
        await client.aclose()
    assert before == 1 and len(opened) == 1  # the one HTTP connection is still there to reuse


@pytest.mark.redis
async def test_a_worker_opens_its_comfyui_sockets_apart_from_its_http_calls(
    make_stack: StackFactory,
) -> None:
    async with make_stack() as stack:
        await asyncio.wait_for(stack.worker.idle.wait(), 10)  # started up
        clients = WorkerContext.of(stack.worker.ctx).pool.clients.values()
        assert clients and all(client.sockets is not client.session for client in clients)
