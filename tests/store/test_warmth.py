"""What each backend has loaded and what its loads and runs cost, as every worker sees it."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from formy_async.settings import BackendSpec
from formy_async.store.slots import Slots
from formy_async.store.warmth import SMOOTHING, Warmth

pytestmark = pytest.mark.redis

URL = "http://gpu-1:8188"
OTHER = "http://gpu-2:8188"


async def test_a_first_measure_is_the_backends_figure(redis: Redis) -> None:
    warmth = Warmth(redis)
    await warmth.measured(URL, switch=2.0, run=0.5)

    [warm] = await warmth.of([URL])

    assert (warm.switch, warm.run) == (2.0, 0.5)


async def test_later_measures_move_the_figure_by_the_smoothing_weight(redis: Redis) -> None:
    warmth = Warmth(redis)
    await warmth.measured(URL, switch=None, run=1.0)
    await warmth.measured(URL, switch=None, run=2.0)

    [warm] = await warmth.of([URL])

    assert warm.run == pytest.approx(1.0 + SMOOTHING * 1.0, abs=1e-12)
    assert warm.switch is None


async def test_a_measured_load_ends_the_switch(redis: Redis) -> None:
    warmth = Warmth(redis)
    await warmth.ran(URL, frozenset({"sdxl.safetensors"}), None)
    [switching] = await warmth.of([URL])
    await warmth.measured(URL, switch=3.0, run=None)

    [warm] = await warmth.of([URL])

    assert switching.switched is not None
    assert (warm.switched, warm.switch, warm.models) == (None, 3.0, frozenset({"sdxl.safetensors"}))


async def test_a_run_measured_alone_leaves_the_switch_on(redis: Redis) -> None:
    warmth = Warmth(redis)
    await warmth.ran(URL, frozenset({"sdxl.safetensors"}), None)
    await warmth.measured(URL, switch=None, run=0.4)

    [warm] = await warmth.of([URL])

    assert warm.switched is not None and warm.run == 0.4


async def test_a_slot_taken_for_a_jobs_models_records_them_on_its_backend(redis: Redis) -> None:
    full, free = BackendSpec(url=URL, lookahead=0), BackendSpec(url=OTHER, lookahead=0)
    slots = Slots(redis, lease=10)
    assert await slots.acquire("earlier", 0, [full]) == 0

    granted = await slots.acquire("j1", 1, [full, free], models=frozenset({"flux.safetensors"}))

    warmth = Warmth(redis)
    assert granted == 1
    assert [w.models for w in await warmth.of([URL, OTHER])] == [
        frozenset(),
        frozenset({"flux.safetensors"}),
    ]
    [switching] = await warmth.of([OTHER])
    assert switching.switched is not None


async def test_a_slot_taken_without_models_leaves_the_record_alone(redis: Redis) -> None:
    warmth = Warmth(redis)
    await warmth.ran(URL, frozenset({"sdxl.safetensors"}), "p1")

    assert await Slots(redis, lease=10).acquire("j1", 0, [BackendSpec(url=URL)]) == 0

    [warm] = await warmth.of([URL])
    assert (warm.models, warm.prompt) == (frozenset({"sdxl.safetensors"}), "p1")
