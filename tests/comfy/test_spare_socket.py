"""A worker's next prompt finds its socket open already: the socket of the prompt that ended
last, or one opened ahead for a prompt queued while another runs; never one another prompt
is using."""

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
from ..proxy import TcpProxy


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


def counting_connections() -> tuple[aiohttp.TraceConfig, list[None]]:
    opened: list[None] = []
    tracing = aiohttp.TraceConfig()

    async def connected(*_: Any) -> None:
        opened.append(None)

    tracing.on_connection_create_end.append(connected)
    return tracing, opened


async def test_the_next_prompt_gets_the_socket_of_the_prompt_that_ended(comfy: ComfyClient) -> None:
    first_id = await run_one(comfy)
    second_id, second = comfy.socket_ahead()
    assert second.done() and second_id == first_id
    socket = await second
    assert socket.client_id == first_id and not socket.ws.closed
    await socket.aclose()


async def test_prompts_one_after_another_open_no_new_sockets() -> None:
    tracing, opened = counting_connections()
    async with (
        run_simulator(SimulatorConfig(step_delay=0.001)) as url,
        aiohttp.ClientSession() as http,
        aiohttp.ClientSession(trace_configs=[tracing]) as own,
    ):
        client = ComfyClient(url, http, spare_socket=True, sockets=own)
        await run_one(client)
        await asyncio.sleep(0.2)  # the socket opened ahead while it ran: open by now
        before = len(opened)
        ids = {await run_one(client) for _ in range(5)}
        await client.aclose()
    assert before == 2 and len(opened) == 2
    assert len(ids) == 1  # each took the socket the one before handed on


async def test_a_prompt_queued_while_another_runs_gets_a_socket_of_its_own(
    comfy: ComfyClient,
) -> None:
    first_id = await run_one(comfy)  # its socket is handed on, and one opened ahead meanwhile
    running_id, running = comfy.socket_ahead()
    assert running_id == first_id
    messages = comfy.run(graph(), new_prompt_id(), await running)
    await anext(messages)  # the prompt runs on the handed-on socket
    await asyncio.sleep(0.2)
    queued_id, queued = comfy.socket_ahead()
    assert queued.done() and queued_id != running_id
    async for _ in messages:
        pass
    await (await queued).aclose()


async def test_a_prompt_s_socket_that_dropped_is_not_handed_on() -> None:
    async with (
        run_simulator(SimulatorConfig(step_delay=0.05)) as url,
        aiohttp.ClientSession() as http,
    ):
        proxy = TcpProxy(int(url.rsplit(":", 1)[1]))
        port = await proxy.start()
        client = ComfyClient(f"http://127.0.0.1:{port}", http, spare_socket=True, idle_check=0.2)
        try:
            client_id, opening = client.socket_ahead()
            socket = await opening
            slow = {
                **graph(),
                "3": {"class_type": "SlowProgress",
                      "inputs": {"image": ["1", 0], "steps": 10, "delay": 0.05}},
            }  # fmt: skip
            slow["2"]["inputs"]["images"] = ["3", 0]
            messages = client.run(slow, new_prompt_id(), socket)
            await anext(messages)
            proxy.drop()
            async for _ in messages:
                pass
            assert socket.gaps
            next_id, following = client.socket_ahead()
            assert next_id != client_id
            await (await following).aclose()
        finally:
            await client.aclose()
            await proxy.aclose()


async def test_no_socket_is_opened_ahead_before_a_prompt_is_queued(comfy: ComfyClient) -> None:
    _, opening = comfy.socket_ahead()
    await (await opening).aclose()
    assert not comfy._spares


async def test_each_prompt_gets_its_own_messages_on_its_own_socket(comfy: ComfyClient) -> None:
    for _ in range(3):
        client_id, opening = comfy.socket_ahead()
        socket = await opening
        prompt_id = new_prompt_id()
        seen = [m async for m in comfy.run(graph(), prompt_id, socket)]
        assert socket.client_id == client_id
        assert {m.prompt_id for m in seen} == {prompt_id}
        assert any(isinstance(m, ExecutionStart) for m in seen)


async def kept_sockets(comfy: ComfyClient) -> list[sockets.PromptSocket]:
    """After one prompt: the socket it handed on and the one opened ahead while it ran."""
    await run_one(comfy)
    await asyncio.sleep(0.2)
    kept = [await spare.opening for spare in comfy._spares]
    assert len(kept) == sockets.SPARES
    return kept


async def test_spares_kept_too_long_are_closed_and_not_used(
    comfy: ComfyClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    stale = await kept_sockets(comfy)
    monkeypatch.setattr(sockets, "SPARE_FOR", 0.0)
    client_id, opening = comfy.socket_ahead()
    assert client_id not in {socket.client_id for socket in stale}
    await (await opening).aclose()
    await asyncio.sleep(0.1)
    assert all(socket.ws.closed for socket in stale)


async def test_spares_the_server_closed_are_not_used(comfy: ComfyClient) -> None:
    closed = await kept_sockets(comfy)
    for socket in closed:
        await socket.ws.close()
    client_id, opening = comfy.socket_ahead()
    assert client_id not in {socket.client_id for socket in closed}
    fresh = await opening
    assert not fresh.ws.closed
    await fresh.aclose()


async def test_closing_the_client_closes_its_spares(comfy: ComfyClient) -> None:
    kept = await kept_sockets(comfy)
    await comfy.aclose()
    assert all(socket.ws.closed for socket in kept)


async def test_without_spares_nothing_is_kept_or_opened_ahead() -> None:
    async with (
        run_simulator(SimulatorConfig(step_delay=0.001)) as url,
        aiohttp.ClientSession() as http,
    ):
        client = ComfyClient(url, http)
        _, opening = client.socket_ahead()
        socket = await opening
        async for _ in client.run(graph(), new_prompt_id(), socket):
            pass
        assert socket.ws.closed
        assert not client._spares


async def test_sockets_of_their_own_leave_http_calls_their_kept_alive_connection() -> None:
    tracing, opened = counting_connections()
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
