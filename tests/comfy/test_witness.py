"""A prompt's socket, seen whole, holds its history entry; anything less sends us to history."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from formy_async.comfy.client import ComfyClient, new_prompt_id
from formy_async.comfy.messages import (
    Executed,
    Executing,
    ExecutionCached,
    ExecutionStart,
    ExecutionSuccess,
)
from formy_async.comfy.witness import Witness
from formy_async.simulator import SimulatorConfig, run_simulator

OLD, NEW = "0.3.64", "0.38.1"


def graph(colour: int | None = None) -> dict[str, Any]:
    colour = random.randrange(0xFFFFFF) if colour is None else colour
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1,
                                                     "color": colour}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "w"}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }  # fmt: skip


async def witnessed(comfy: ComfyClient, g: dict[str, Any], outputs: list[str] | None) -> Witness:
    prompt_id = new_prompt_id()
    witness = Witness(prompt_id, g, outputs)
    async for message in comfy.run(g, prompt_id):
        witness.saw(message)
    return witness


@pytest.fixture(params=[OLD, NEW])
async def comfy(request: pytest.FixtureRequest) -> AsyncIterator[ComfyClient]:
    config = SimulatorConfig(comfyui_version=request.param, step_delay=0.001)
    async with run_simulator(config) as url, aiohttp.ClientSession() as http:
        yield ComfyClient(url, http)


async def test_a_success_seen_whole_is_the_prompts_history_entry(comfy: ComfyClient) -> None:
    witness = await witnessed(comfy, graph(), None)
    seen, history = witness.entry(), await comfy.history(witness.prompt_id)
    assert seen is not None and history is not None
    assert seen.outputs == history.outputs
    assert seen.status.messages == history.status.messages
    assert seen.files() and seen.status.completed


async def test_a_cached_output_node_is_left_to_history(comfy: ComfyClient) -> None:
    colour = random.randrange(0xFFFFFF)
    await witnessed(comfy, graph(colour), None)
    again = await witnessed(comfy, graph(colour), None)  # every node cached this time
    assert again.entry() is None


async def rerun_with_new_save(comfy: ComfyClient) -> dict[str, Any]:
    """A graph run once already, its save node changed: the save runs anew, the rest is cached."""
    colour = random.randrange(0xFFFFFF)
    await witnessed(comfy, graph(colour), None)
    again = graph(colour)
    again["2"]["inputs"]["filename_prefix"] = "other"
    return again


async def test_a_cached_node_that_feeds_others_is_no_reason_to_read_history(
    comfy: ComfyClient,
) -> None:
    again = await rerun_with_new_save(comfy)
    del again["3"]  # only the image node stays cached
    witness = await witnessed(comfy, again, None)
    assert witness.entry() is not None


async def test_a_cached_node_the_job_does_not_collect_is_no_reason_to_read_history(
    comfy: ComfyClient,
) -> None:
    again = await rerun_with_new_save(comfy)  # the preview node stays cached
    witness = await witnessed(comfy, again, ["2"])
    assert witness.entry() is not None


def test_a_socket_that_dropped_is_left_to_history() -> None:
    witness = whole_run()
    witness.missed()
    assert witness.entry() is None


def test_a_prompt_followed_from_its_middle_is_left_to_history() -> None:
    witness = Witness("p", graph(), None)
    for message in run_messages()[2:]:
        witness.saw(message)
    assert witness.entry() is None


def test_a_prompt_not_yet_over_is_left_to_history() -> None:
    witness = Witness("p", graph(), None)
    for message in run_messages()[:-1]:
        witness.saw(message)
    assert witness.entry() is None


def test_a_node_reported_twice_is_left_to_history() -> None:
    witness = Witness("p", graph(), None)
    messages = run_messages()
    for message in [*messages[:3], messages[2], *messages[3:]]:
        witness.saw(message)
    assert witness.entry() is None


def test_the_witnessed_entry_keeps_comfyuis_timestamps() -> None:
    entry = whole_run().entry()
    assert entry is not None
    assert [(name, data["timestamp"]) for name, data in entry.status.messages] == [
        ("execution_start", 1000),
        ("execution_cached", 1001),
        ("execution_success", 1300),
    ]


def run_messages() -> list[Any]:
    output = {"images": [{"filename": "w_00001_.png", "subfolder": "", "type": "output"}]}
    return [
        ExecutionStart(prompt_id="p", timestamp=1000),
        ExecutionCached(prompt_id="p", nodes=[], timestamp=1001),
        Executed(prompt_id="p", node="2", output=output),
        ExecutionSuccess(prompt_id="p", timestamp=1300),
        Executing(prompt_id="p", node=None),
    ]


def whole_run() -> Witness:
    witness = Witness("p", graph(), None)
    for message in run_messages():
        witness.saw(message)
    return witness
