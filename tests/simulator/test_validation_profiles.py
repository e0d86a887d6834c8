"""POST /prompt validation where the profiles differ: node types, cycles, V3 combos, details."""

from __future__ import annotations

import aiohttp
import pytest

from .support import NEW, OLD, PROFILES, Graph, empty_images, history_of, post_prompt, simulator


def invert_cycle() -> Graph:
    """1 -> 2 -> 1, with SaveImage 3 reading node 1."""
    return {
        "1": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "c"}},
    }


def save_video(format_name: str = "auto", codec: str = "auto") -> Graph:
    return {
        "1": empty_images(batch=2),
        "2": {"class_type": "CreateVideo", "inputs": {"images": ["1", 0], "fps": 8}},
        "3": {
            "class_type": "SaveVideo",
            "inputs": {"video": ["2", 0], "filename_prefix": "v", "format": format_name,
                       "codec": codec},
        },
    }  # fmt: skip


async def test_new_profile_names_an_unknown_class_missing_node_type(
    http: aiohttp.ClientSession,
) -> None:
    graph = {"1": {"class_type": "Nope", "inputs": {}, "_meta": {"title": "My node"}}}
    async with simulator(NEW) as url:
        status, body = await post_prompt(http, url, graph)
    assert status == 400
    assert body["node_errors"] == {}
    assert body["error"] == {
        "type": "missing_node_type",
        "message": "Node 'My node' not found. The custom node may not be installed.",
        "details": "Node ID '#1'",
        "extra_info": {"node_id": "1", "class_type": "Nope", "node_title": "My node"},
    }


async def test_new_profile_names_a_node_without_class_type(http: aiohttp.ClientSession) -> None:
    async with simulator(NEW) as url:
        status, body = await post_prompt(http, url, {"7": {"inputs": {}}})
    assert status == 400
    assert body["error"]["type"] == "missing_node_type"
    assert body["error"]["message"].startswith("Node 'ID #7' has no class_type.")
    assert body["error"]["extra_info"]["class_type"] is None


async def test_old_profile_calls_an_unknown_class_invalid_prompt(
    http: aiohttp.ClientSession,
) -> None:
    async with simulator(OLD) as url:
        status, body = await post_prompt(http, url, {"1": {"class_type": "Nope", "inputs": {}}})
    assert (status, body["error"]["type"]) == (400, "invalid_prompt")


async def test_new_profile_reports_dependency_cycle_on_each_node(
    http: aiohttp.ClientSession,
) -> None:
    async with simulator(NEW) as url:
        status, body = await post_prompt(http, url, invert_cycle())
    assert status == 400
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    assert set(body["node_errors"]) == {"1", "2"}
    error = body["node_errors"]["2"]["errors"][0]
    assert error["type"] == "dependency_cycle"
    assert error["details"] == "1 (ImageInvert) -> 2 (ImageInvert) -> 1 (ImageInvert)"
    assert error["extra_info"] == {"node_id": "2", "cycle_nodes": ["1", "2"]}
    assert body["node_errors"]["1"]["dependent_outputs"] == ["3"]


async def test_old_profile_reports_cycle_with_empty_node_errors(
    http: aiohttp.ClientSession,
) -> None:
    async with simulator(OLD) as url:
        status, body = await post_prompt(http, url, invert_cycle())
    assert (status, body["node_errors"]) == (400, {})


def save_webm(codec: str) -> Graph:
    inputs = {"images": ["1", 0], "filename_prefix": "w", "codec": codec, "fps": 8.0, "crf": 32.0}
    return {"1": empty_images(batch=2), "2": {"class_type": "SaveWEBM", "inputs": inputs}}


async def test_new_profile_checks_v3_combo_options(http: aiohttp.ClientSession) -> None:
    async with simulator(NEW) as url:
        status, body = await post_prompt(http, url, save_webm("h265"))
    assert status == 400
    error = body["node_errors"]["2"]["errors"][0]
    assert error["type"] == "value_not_in_list"
    assert error["details"] == "codec: 'h265' not in ['vp9', 'av1']"
    assert error["extra_info"]["input_config"][0] == "COMBO"


async def test_old_profile_runs_an_unchecked_v3_combo_into_a_key_error(
    http: aiohttp.ClientSession,
) -> None:
    async with simulator(OLD) as url:
        status, body = await post_prompt(http, url, save_webm("h265"))
        entry = await history_of(http, url, body["prompt_id"])
    event, data = entry["status"]["messages"][-1]
    assert (status, event, data["exception_type"]) == (200, "execution_error", "KeyError")


async def test_old_profile_lets_v3_combo_through_to_fail_at_run_time(
    http: aiohttp.ClientSession,
) -> None:
    async with simulator(OLD) as url:
        status, body = await post_prompt(http, url, save_video(format_name="mkv"))
        entry = await history_of(http, url, body["prompt_id"])
    assert (status, body["node_errors"]) == (200, {})
    event, data = entry["status"]["messages"][-1]
    assert (event, data["node_type"]) == ("execution_error", "SaveVideo")
    assert data["exception_message"] == "'mkv' is not a valid VideoContainer\n"


@pytest.mark.parametrize(("version", "shown"), [(OLD, "'5'"), (NEW, "5")])
async def test_value_not_in_list_shows_the_value_per_profile(
    version: str, shown: str, http: aiohttp.ClientSession
) -> None:
    graph = {
        "1": empty_images(),
        "2": {
            "class_type": "ImageScaleBy",
            "inputs": {"image": ["1", 0], "upscale_method": 5, "scale_by": 1.0},
        },
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x"}},
    }
    async with simulator(version) as url:
        _, body = await post_prompt(http, url, graph)
    details = body["node_errors"]["2"]["errors"][0]["details"]
    assert details.startswith(f"upscale_method: {shown} not in [")


@pytest.mark.parametrize("version", PROFILES)
async def test_valid_video_graph_passes_validation(
    version: str, http: aiohttp.ClientSession
) -> None:
    async with simulator(version) as url:
        status, body = await post_prompt(http, url, save_video())
    assert (status, body["node_errors"]) == (200, {})
