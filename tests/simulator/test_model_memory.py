"""The simulator holds a few models loaded, least recently used out first."""

from __future__ import annotations

import pytest

from formy_async.simulator import SimulatorConfig, nodes
from formy_async.simulator.nodes import ModelMemory


async def test_a_loaded_model_stays_until_newer_ones_push_it_out() -> None:
    config, memory = SimulatorConfig(resident_models=2), ModelMemory()
    for name in ("a", "b", "a", "c"):  # "a" used again: "b" is now the oldest
        await memory.load(name, config)
    assert list(memory.loaded) == ["a", "c"]


async def test_only_a_model_not_in_memory_takes_the_load_delay(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config, memory = SimulatorConfig(model_load_delay=0.05), ModelMemory()
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(nodes.asyncio, "sleep", sleep)
    await memory.load("a", config)
    await memory.load("a", config)
    assert slept == [0.05]
