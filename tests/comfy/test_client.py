"""The ComfyUI client against both releases the simulator imitates: the routes each one gets."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest

from formy_async.comfy.client import ComfyClient, new_prompt_id
from formy_async.comfy.messages import ProgressStep
from formy_async.errors import ComfyInterrupted
from formy_async.simulator import SimulatorConfig, run_simulator

from ..proxy import TcpProxy

OLD, NEW = "0.3.64", "0.38.1"


class Recorded:
    """An HTTP session that notes every request it makes, as `METHOD /path`."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        trace = aiohttp.TraceConfig()
        trace.on_request_start.append(self._start)
        self.session = aiohttp.ClientSession(trace_configs=[trace])

    async def _start(self, _: Any, __: SimpleNamespace, params: Any) -> None:
        self.requests.append(f"{params.method} {params.url.path}")

    def since(self, mark: int) -> list[str]:
        return self.requests[mark:]


@contextlib.asynccontextmanager
async def comfy(version: str, *, via_proxy: bool = False) -> AsyncIterator[Any]:
    config = SimulatorConfig(comfyui_version=version, step_delay=0.02)
    recorded = Recorded()
    async with run_simulator(config) as url, recorded.session:
        proxy = None
        if via_proxy:
            proxy = TcpProxy(int(url.rsplit(":", 1)[1]))
            url = f"http://127.0.0.1:{await proxy.start()}"
        client = ComfyClient(url, recorded.session, idle_check=0.2)
        try:
            yield SimpleNamespace(client=client, recorded=recorded, proxy=proxy)
        finally:
            if proxy is not None:
                await proxy.aclose()


def slow_graph(steps: int) -> dict[str, Any]:
    colour = random.randrange(0xFFFFFF)  # a graph ComfyUI has not cached
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 32, "height": 32, "batch_size": 1, "color": colour},
        },
        "2": {
            "class_type": "SlowProgress",
            "inputs": {"image": ["1", 0], "steps": steps, "delay": 0.02},
        },
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "t"}},
    }


async def test_the_client_knows_what_each_release_has() -> None:
    async with comfy(OLD) as old, comfy(NEW) as new:
        old_info, new_info = await old.client.info(), await new.client.info()
    assert (old_info.version, old_info.jobs_api) == (OLD, False)
    assert (new_info.version, new_info.jobs_api) == (NEW, True)
    assert old_info.preview_metadata and new_info.preview_metadata


async def test_what_a_release_has_is_asked_once() -> None:
    async with comfy(NEW) as c:
        await c.client.info()
        mark = len(c.recorded.requests)
        await c.client.info()
        assert c.recorded.since(mark) == []
        c.client.forget_info()
        await c.client.info()
        assert "GET /system_stats" in c.recorded.since(mark)


async def run_until_progress(client: ComfyClient, graph: dict[str, Any], prompt_id: str) -> None:
    async for message in client.run(graph, prompt_id):
        if isinstance(message, ProgressStep):
            return


@pytest.mark.parametrize(
    ("version", "route"),
    [(NEW, "POST /api/jobs/{id}/cancel"), (OLD, "POST /interrupt")],
)
async def test_a_running_prompt_is_cancelled_by_the_route_its_release_has(
    version: str, route: str
) -> None:
    async with comfy(version) as c:
        prompt_id = new_prompt_id()
        await run_until_progress(c.client, slow_graph(steps=500), prompt_id)
        mark = len(c.recorded.requests)
        await c.client.cancel(prompt_id)
        with pytest.raises(ComfyInterrupted):
            await c.client.result(prompt_id)
        used = c.recorded.since(mark)
    assert route.replace("{id}", prompt_id) in used
    assert ("POST /interrupt" in used) == (version == OLD)


@pytest.mark.parametrize("version", [NEW, OLD])
async def test_a_pending_prompt_is_cancelled_and_never_runs(version: str) -> None:
    async with comfy(version) as c:
        running, pending = new_prompt_id(), new_prompt_id()
        await run_until_progress(c.client, slow_graph(steps=500), running)
        await c.client.queue_prompt(slow_graph(steps=1), client_id="x", prompt_id=pending)
        mark = len(c.recorded.requests)
        await c.client.cancel(pending)
        assert not await c.client.is_queued(pending)
        used = c.recorded.since(mark)
        await c.client.cancel(running)
    assert (f"POST /api/jobs/{pending}/cancel" in used) == (version == NEW)
    assert ("POST /queue" in used) == (version == OLD)


@pytest.mark.parametrize(
    ("version", "reconcile"),
    [(NEW, "GET /api/jobs/{id}"), (OLD, "GET /history/{id}")],
)
async def test_a_cut_socket_is_reconciled_by_the_route_its_release_has(
    version: str, reconcile: str
) -> None:
    async with comfy(version, via_proxy=True) as c:
        prompt_id = new_prompt_id()
        seen = 0
        async for message in c.client.run(slow_graph(steps=30), prompt_id):
            if isinstance(message, ProgressStep):
                seen += 1
                if seen == 3:
                    mark = len(c.recorded.requests)
                    c.proxy.drop()  # the socket (and every connection) goes down mid-run
        entry = await asyncio.wait_for(c.client.result(prompt_id), 10)
        used = c.recorded.since(mark)
    assert entry.files()
    assert reconcile.replace("{id}", prompt_id) in used
    assert ("GET /api/jobs/" + prompt_id in used) == (version == NEW)


@pytest.mark.parametrize("version", [NEW, OLD])
async def test_a_socket_comfyui_silenced_after_a_cut_is_opened_anew(version: str) -> None:
    # ComfyUI forgets a client id's socket when any socket of that id closes: the socket
    # opened again after a cut goes silent once ComfyUI notices the old one's end
    async with comfy(version, via_proxy=True) as c:
        steps = 100
        seen: list[float] = []
        async for message in c.client.run(slow_graph(steps), new_prompt_id()):
            if isinstance(message, ProgressStep):
                seen.append(message.value)
                if len(seen) == 3:
                    c.proxy.cut_unseen(for_seconds=0.3)
    assert max(seen) == steps  # the last step came through the socket opened anew


async def test_the_new_release_refuses_a_prompt_id_that_is_not_a_canonical_uuid() -> None:
    async with (
        comfy(NEW) as c,
        c.recorded.session.post(
            f"{c.client.base_url}/prompt",
            json={"prompt": slow_graph(1), "prompt_id": new_prompt_id().replace("-", "")},
        ) as answer,
    ):
        body = await answer.json()
    assert (answer.status, body["error"]["type"]) == (400, "invalid_prompt_id")
