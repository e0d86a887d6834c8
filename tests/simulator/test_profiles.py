"""The two ComfyUI profiles: what the config selects and each documented difference between them."""

from __future__ import annotations

import asyncio
import json
import struct
import sys
import uuid

import aiohttp
import pydantic
import pytest

from formy_async.simulator import SimulatorConfig

from .support import (
    NEW,
    OLD,
    PROFILES,
    Graph,
    empty_images,
    get_json,
    history_of,
    next_message,
    post_prompt,
    save_graph,
    simulator,
    slow_graph,
    submit,
)


@pytest.mark.parametrize(
    ("version", "new"),
    [("0.3.64", False), ("0.3.70", False), ("0.4", False), ("0.25", True), ("0.38.1", True),
     ("v0.38.1", True), ("1.0.0", True)],
)  # fmt: skip
def test_version_at_or_after_0_25_selects_new_profile(version: str, new: bool) -> None:
    assert SimulatorConfig(comfyui_version=version).is_new_profile is new


def test_default_profile_is_0_3_64() -> None:
    config = SimulatorConfig()
    assert config.comfyui_version == "0.3.64"
    assert not config.is_new_profile


@pytest.mark.parametrize("version", ["", "latest", "0", "0.38.1-beta", "0.x"])
def test_unparseable_version_is_refused(version: str) -> None:
    with pytest.raises(pydantic.ValidationError, match="not a ComfyUI version"):
        SimulatorConfig(comfyui_version=version)


@pytest.mark.parametrize("version", PROFILES)
async def test_system_stats_reports_configured_version(
    version: str, http: aiohttp.ClientSession
) -> None:
    async with simulator(version) as url:
        _, body = await get_json(http, f"{url}/system_stats")
    assert body["system"]["comfyui_version"] == version
    assert body["devices"][0]["type"] == "cpu"


async def test_old_system_stats_reports_os_name(http: aiohttp.ClientSession) -> None:
    async with simulator(OLD) as url:
        _, body = await get_json(http, f"{url}/system_stats")
    assert body["system"]["os"] == "posix"
    assert "deploy_environment" not in body["system"]
    assert "comfy_package_versions" not in body["system"]


async def test_new_system_stats_reports_platform_and_packages(http: aiohttp.ClientSession) -> None:
    async with simulator(NEW) as url:
        _, body = await get_json(http, f"{url}/system_stats")
    system = body["system"]
    assert system["os"] == sys.platform
    assert system["deploy_environment"] == "local-git"
    names = [package["name"] for package in system["comfy_package_versions"]]
    assert "comfyui-frontend-package" in names
    assert set(system["comfy_package_versions"][0]) == {"name", "installed", "required"}


async def test_old_features_are_preview_metadata_and_upload_size(
    http: aiohttp.ClientSession,
) -> None:
    async with simulator(OLD) as url:
        _, body = await get_json(http, f"{url}/features")
    assert body == {"supports_preview_metadata": True, "max_upload_size": 104857600}


async def test_new_features_add_the_newer_flags(http: aiohttp.ClientSession) -> None:
    async with simulator(NEW) as url:
        _, body = await get_json(http, f"{url}/features")
    assert body == {
        "supports_preview_metadata": True,
        "supports_model_type_tags": True,
        "max_upload_size": 104857600,
        "extension": {"manager": {"supports_v4": True}},
        "node_replacements": True,
        "assets": False,
    }


@pytest.mark.parametrize("version", PROFILES)
async def test_websocket_feature_flags_reply_equals_features(
    version: str, http: aiohttp.ClientSession
) -> None:
    async with simulator(version) as url:
        _, features = await get_json(http, f"{url}/features")
        async with http.ws_connect(f"{url}/ws?clientId=flags") as ws:
            await next_message(ws, "status")
            await ws.send_json(
                {"type": "feature_flags", "data": {"supports_preview_metadata": True}}
            )
            assert await next_message(ws, "feature_flags") == features


async def test_new_profile_refuses_hex_prompt_id(http: aiohttp.ClientSession) -> None:
    async with simulator(NEW) as url:
        status, body = await post_prompt(http, url, save_graph(), prompt_id=uuid.uuid4().hex)
    assert status == 400
    assert body["node_errors"] == {}
    assert body["error"]["type"] == "invalid_prompt_id"
    assert body["error"]["message"] == "prompt_id must be a valid UUID"
    assert body["error"]["details"].startswith("prompt_id must be a UUID string in canonical")
    assert body["error"]["extra_info"] == {}


async def test_old_profile_accepts_hex_prompt_id(http: aiohttp.ClientSession) -> None:
    prompt_id = uuid.uuid4().hex
    async with simulator(OLD) as url:
        status, body = await post_prompt(http, url, save_graph(), prompt_id=prompt_id)
    assert (status, body["prompt_id"]) == (200, prompt_id)


@pytest.mark.parametrize(
    "prompt_id",
    [str(uuid.uuid4()).upper(), "{" + str(uuid.uuid4()) + "}", "urn:uuid:" + str(uuid.uuid4()),
     "not-a-uuid", 12345],
)  # fmt: skip
async def test_new_profile_refuses_non_canonical_prompt_ids(
    prompt_id: object, http: aiohttp.ClientSession
) -> None:
    async with simulator(NEW) as url:
        status, body = await post_prompt(http, url, save_graph(), prompt_id=prompt_id)
    assert (status, body["error"]["type"]) == (400, "invalid_prompt_id")


async def test_old_profile_stringifies_any_prompt_id(http: aiohttp.ClientSession) -> None:
    async with simulator(OLD) as url:
        _, body = await post_prompt(http, url, save_graph(), prompt_id=12345)
    assert body["prompt_id"] == "12345"


@pytest.mark.parametrize("version", PROFILES)
async def test_absent_prompt_id_is_minted_as_canonical_uuid(
    version: str, http: aiohttp.ClientSession
) -> None:
    async with simulator(version) as url:
        prompt_id = await submit(http, url, save_graph())
    assert str(uuid.UUID(prompt_id)) == prompt_id


async def test_new_profile_mints_an_id_for_null(http: aiohttp.ClientSession) -> None:
    async with simulator(NEW) as url:
        _, body = await post_prompt(http, url, save_graph(), prompt_id=None)
    assert str(uuid.UUID(body["prompt_id"])) == body["prompt_id"]


@pytest.mark.parametrize("version", PROFILES)
async def test_duplicate_prompt_id_is_accepted(version: str, http: aiohttp.ClientSession) -> None:
    prompt_id = str(uuid.uuid4())
    async with simulator(version) as url:
        first = await submit(http, url, save_graph(1), prompt_id=prompt_id)
        second = await submit(http, url, save_graph(2), prompt_id=prompt_id)
    assert first == second == prompt_id


async def test_new_profile_stamps_create_time(http: aiohttp.ClientSession) -> None:
    async with simulator(NEW) as url:
        prompt_id = await submit(http, url, save_graph())
        entry = await history_of(http, url, prompt_id)
    create_time = entry["prompt"][3]["create_time"]
    started = entry["status"]["messages"][0][1]["timestamp"]
    assert isinstance(create_time, int)
    assert 0 <= started - create_time < 5000


async def test_old_profile_has_no_create_time(http: aiohttp.ClientSession) -> None:
    async with simulator(OLD) as url:
        entry = await history_of(http, url, await submit(http, url, save_graph()))
    assert "create_time" not in entry["prompt"][3]


SECRETS = {"auth_token_comfy_org": "t0ken", "api_key_comfy_org": "k3y", "note": "kept"}


async def queued_extra_data(http: aiohttp.ClientSession, url: str) -> tuple[dict[str, str], str]:
    """The extra_data /queue shows for a prompt waiting behind a slow one, and its id."""
    await submit(http, url, slow_graph())
    prompt_id = await submit(http, url, save_graph(), extra_data=dict(SECRETS))
    _, queue = await get_json(http, f"{url}/queue")
    pending = next(item for item in queue["queue_pending"] if item[1] == prompt_id)
    await http.post(f"{url}/interrupt")
    return pending[3], prompt_id


def save_node(source: str, prefix: str = "slow") -> Graph:
    return {"class_type": "SaveImage", "inputs": {"images": [source, 0], "filename_prefix": prefix}}


async def test_old_profile_shows_sensitive_keys_in_queue_not_history(
    http: aiohttp.ClientSession,
) -> None:
    async with simulator(OLD) as url:
        extra_data, prompt_id = await queued_extra_data(http, url)
        entry = await history_of(http, url, prompt_id)
    assert extra_data["auth_token_comfy_org"] == "t0ken"
    assert "auth_token_comfy_org" not in entry["prompt"][3]
    assert "api_key_comfy_org" not in entry["prompt"][3]


async def test_new_profile_strips_sensitive_keys_before_queuing(
    http: aiohttp.ClientSession,
) -> None:
    async with simulator(NEW) as url:
        extra_data, prompt_id = await queued_extra_data(http, url)
        entry = await history_of(http, url, prompt_id)
    for stored in (extra_data, entry["prompt"][3]):
        assert "auth_token_comfy_org" not in stored
        assert "api_key_comfy_org" not in stored
        assert stored["note"] == "kept"


@pytest.mark.parametrize("version", PROFILES)
async def test_resubmitted_output_node_sends_executed_again_and_keeps_files(
    version: str, http: aiohttp.ClientSession
) -> None:
    async with simulator(version) as url, http.ws_connect(f"{url}/ws?clientId=c") as ws:
        first = await history_of(http, url, await submit(http, url, save_graph(), client_id="c"))
        prompt_id = await submit(http, url, save_graph(), client_id="c")
        cached = await next_message(ws, "execution_cached")
        while cached["prompt_id"] != prompt_id:
            cached = await next_message(ws, "execution_cached")
        executed = await next_message(ws, "executed")
        second = await history_of(http, url, prompt_id)
    assert cached["nodes"] == ["1", "2"]
    assert executed["output"] == first["outputs"]["2"]
    assert second["outputs"] == first["outputs"]


def two_outputs() -> Graph:
    return {"1": empty_images(), "2": save_node("1", "a"), "3": save_node("1", "b")}


async def partial_rerun_outputs(http: aiohttp.ClientSession, url: str) -> set[str]:
    await history_of(http, url, await submit(http, url, two_outputs()))
    prompt_id = await submit(http, url, two_outputs(), partial_execution_targets=["2"])
    return set((await history_of(http, url, prompt_id))["outputs"])


async def test_old_history_lists_every_cached_output_of_the_prompt(
    http: aiohttp.ClientSession,
) -> None:
    async with simulator(OLD) as url:
        assert await partial_rerun_outputs(http, url) == {"2", "3"}


async def test_new_history_lists_only_outputs_this_run_reached(
    http: aiohttp.ClientSession,
) -> None:
    async with simulator(NEW) as url:
        assert await partial_rerun_outputs(http, url) == {"2"}


async def first_binary_frame(ws: aiohttp.ClientWebSocketResponse) -> bytes:
    async with asyncio.timeout(10):
        while True:
            msg = await ws.receive()
            if msg.type == aiohttp.WSMsgType.BINARY:
                frame: bytes = msg.data
                return frame


@pytest.mark.parametrize("version", PROFILES)
async def test_metadata_client_gets_preview_event_4_naming_prompt_and_node(
    version: str, http: aiohttp.ClientSession
) -> None:
    async with simulator(version) as url, http.ws_connect(f"{url}/ws?clientId=m") as ws:
        await ws.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
        await next_message(ws, "feature_flags")
        prompt_id = await submit(http, url, slow_graph(steps=2, delay=0.01), client_id="m")
        frame = await first_binary_frame(ws)
    event, length = struct.unpack(">II", frame[:8])
    meta = json.loads(frame[8 : 8 + length])
    assert event == 4
    assert (meta["prompt_id"], meta["node_id"], meta["image_type"]) == (
        prompt_id,
        "2",
        "image/jpeg",
    )


@pytest.mark.parametrize("version", PROFILES)
async def test_legacy_client_gets_preview_event_1(
    version: str, http: aiohttp.ClientSession
) -> None:
    async with simulator(version) as url, http.ws_connect(f"{url}/ws?clientId=l") as ws:
        await submit(http, url, slow_graph(steps=2, delay=0.01), client_id="l")
        frame = await first_binary_frame(ws)
    assert struct.unpack(">II", frame[:8]) == (1, 1)  # PREVIEW_IMAGE, JPEG
