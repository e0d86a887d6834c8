"""Output files come off ComfyUI as soon as their node reports them, not after its history."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from formy_async.comfy.client import ComfyClient, new_prompt_id
from formy_async.comfy.messages import Executed
from formy_async.models import Job
from formy_async.simulator import SimulatorConfig, run_simulator
from formy_async.storage import LocalStorage
from formy_async.worker.transfer import Prefetch, collect_outputs
from formy_async.workflows import raw_workflow

from ..helpers import traced_session


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[SimpleNamespace]:
    http, requests = traced_session()
    async with (
        run_simulator(SimulatorConfig(step_delay=0.001)) as url,
        http,
    ):
        yield SimpleNamespace(comfy=ComfyClient(url, http), requests=requests, tmp=tmp_path)


def two_saves() -> dict[str, Any]:
    """Two save nodes, the second after a slow step: the first's file is ready well before."""
    colour = random.randrange(0xFFFFFF)
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1,
                                                     "color": colour}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "a"}},
        "3": {"class_type": "ImageBlur", "inputs": {"image": ["1", 0], "blur_radius": 3,
                                                    "sigma": 1.0}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "b"}},
    }  # fmt: skip


async def test_a_reported_file_is_fetched_once_and_before_history_is_read(
    world: SimpleNamespace,
) -> None:
    graph = two_saves()
    workflow = raw_workflow(graph, 60)
    prefetch = Prefetch(world.comfy, workflow)
    prompt_id = new_prompt_id()
    async for message in world.comfy.run(graph, prompt_id):
        if isinstance(message, Executed):
            prefetch.executed(message)
    entry = await world.comfy.result(prompt_id)
    job = Job(id="j1", workflow="raw", params={}, graph=graph)
    storage = LocalStorage(world.tmp)
    stored = [o async for o in collect_outputs(prefetch, storage, entry, workflow, job)]
    await prefetch.aclose()

    assert [o.filename for o in stored] == ["2_1.png", "4_1.png"]
    assert world.requests.count("GET /view") == 2  # one each: none again after history
    history = next(i for i, r in enumerate(world.requests) if r.startswith("GET /history"))
    assert world.requests.index("GET /view") < history  # the first came while it ran


async def test_a_file_no_node_reported_is_fetched_from_what_history_lists(
    world: SimpleNamespace,
) -> None:
    graph = two_saves()
    workflow = raw_workflow(graph, 60)
    prompt_id = new_prompt_id()
    async for _ in world.comfy.run(graph, prompt_id):
        pass  # nothing handed to the prefetch: as for a node ComfyUI had cached
    entry = await world.comfy.result(prompt_id)
    prefetch = Prefetch(world.comfy, workflow)
    job = Job(id="j2", workflow="raw", params={}, graph=graph)
    stored = [
        o async for o in collect_outputs(prefetch, LocalStorage(world.tmp), entry, workflow, job)
    ]
    assert len(stored) == 2 and all(o.size > 0 for o in stored)
