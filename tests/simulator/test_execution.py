"""Prompt execution as a WebSocket client sees it: event order, caching, interrupts, errors."""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from formy_async.simulator import SimulatorConfig, run_simulator

Message = dict[str, Any]


@pytest.fixture
async def url() -> AsyncIterator[str]:
    async with run_simulator(SimulatorConfig(step_delay=0.01)) as base:
        yield base


def image_graph(steps: int = 3, delay: float = 0.01, prefix: str = "formy_normal") -> Message:
    return {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 64, "height": 64, "batch_size": 1, "color": 0x336699},
        },
        "2": {
            "class_type": "SlowProgress",
            "inputs": {"image": ["1", 0], "steps": steps, "delay": delay},
            "_meta": {"title": "Slow"},
        },
        "3": {"class_type": "ImageInvert", "inputs": {"image": ["2", 0]}},
        "4": {
            "class_type": "SaveImage",
            "inputs": {"images": ["3", 0], "filename_prefix": prefix},
        },
    }


def text_to_image_graph(seed: int = 1, width: int = 128, height: int = 96) -> Message:
    return {
        "4": {
            "class_type": "CheckpointLoaderSimple",
            "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"},
        },
        "5": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": width, "height": height, "batch_size": 2},
        },
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red fox", "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": seed,
                "steps": 3,
                "cfg": 7,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1,
                "model": ["4", 0],
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "t2i", "images": ["8", 0]}},
    }


async def submit(http: aiohttp.ClientSession, url: str, graph: Message, **extra: Any) -> str:
    async with http.post(f"{url}/prompt", json={"prompt": graph, **extra}) as response:
        assert response.status == 200, await response.text()
        body = await response.json()
    return str(body["prompt_id"])


async def until_done(ws: aiohttp.ClientWebSocketResponse, prompt_id: str) -> list[Any]:
    """Every frame (JSON as dicts, binary as bytes) up to `executing` with node null."""
    frames: list[Any] = []
    async with asyncio.timeout(10):
        while True:
            msg = await ws.receive()
            if msg.type == aiohttp.WSMsgType.BINARY:
                frames.append(msg.data)
                continue
            data = json.loads(msg.data)
            frames.append(data)
            done = data["type"] == "executing" and data["data"].get("prompt_id") == prompt_id
            if done and data["data"]["node"] is None:
                return frames


async def next_of_type(ws: aiohttp.ClientWebSocketResponse, kind: str) -> Message:
    async with asyncio.timeout(10):
        while True:
            msg = await ws.receive()
            if msg.type == aiohttp.WSMsgType.TEXT and json.loads(msg.data)["type"] == kind:
                result: Message = json.loads(msg.data)
                return result


def types_of(frames: list[Any]) -> list[str]:
    """The JSON message types, in order (binary frames left out)."""
    return [f["type"] for f in frames if isinstance(f, dict)]


def first_of(frames: list[Any], kind: str) -> Message:
    """The data of the first JSON message of this type."""
    found: Message = next(f for f in frames if isinstance(f, dict) and f["type"] == kind)["data"]
    return found


def collapse(types: list[str]) -> list[str]:
    out: list[str] = []
    for kind in types:
        if not out or out[-1] != kind:
            out.append(kind)
    return out


async def history_of(http: aiohttp.ClientSession, url: str, prompt_id: str) -> Message:
    async with http.get(f"{url}/history/{prompt_id}") as response:
        body: Message = await response.json()
    return body


async def test_normal_run_sends_events_in_documented_order(
    url: str, http: aiohttp.ClientSession
) -> None:
    config = SimulatorConfig(step_delay=0.01, previews=False)
    async with run_simulator(config) as base, http.ws_connect(f"{base}/ws?clientId=c1") as ws:
        await next_of_type(ws, "status")
        prompt_id = await submit(http, base, image_graph(steps=2), client_id="c1")
        frames = await until_done(ws, prompt_id)
    assert types_of(frames) == [
        "status", "status", "execution_start", "execution_cached",
        "progress_state", "executing", "progress_state",
        "progress_state", "executing", "progress_state", "progress",
        "progress_state", "progress", "progress_state",
        "progress_state", "executing", "progress_state",
        "progress_state", "executing", "executed", "progress_state",
        "execution_success", "status", "executing",
    ]  # fmt: skip
    executed = next(f for f in frames if f["type"] == "executed")["data"]
    images = [{"filename": "formy_normal_00001_.png", "subfolder": "", "type": "output"}]
    assert executed == {
        "node": "4", "display_node": "4", "output": {"images": images}, "prompt_id": prompt_id
    }  # fmt: skip
    finished = frames[-4]["data"]["nodes"]["2"]
    assert (finished["state"], finished["value"], finished["max"]) == ("finished", 2, 2)


async def test_history_entry_has_documented_shape(url: str, http: aiohttp.ClientSession) -> None:
    async with http.ws_connect(f"{url}/ws?clientId=c1") as ws:
        prompt_id = await submit(http, url, image_graph(), client_id="c1")
        await until_done(ws, prompt_id)
    entry = (await history_of(http, url, prompt_id))[prompt_id]
    number, stored_id, graph, extra_data, outputs = entry["prompt"]
    assert (number, stored_id, extra_data, outputs) == (0, prompt_id, {"client_id": "c1"}, ["4"])
    assert graph["2"]["_meta"] == {"title": "Slow"}
    assert entry["outputs"]["4"]["images"][0]["filename"] == "formy_normal_00001_.png"
    assert entry["status"]["status_str"] == "success"
    assert entry["status"]["completed"] is True
    assert [m[0] for m in entry["status"]["messages"]] == [
        "execution_start",
        "execution_cached",
        "execution_success",
    ]
    assert entry["meta"]["4"] == {
        "node_id": "4", "display_node": "4", "parent_node": None, "real_node_id": "4"
    }  # fmt: skip


async def test_text_to_image_saves_batch_of_requested_size(
    url: str, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(f"{url}/ws?clientId=c1") as ws:
        prompt_id = await submit(http, url, text_to_image_graph(), client_id="c1")
        frames = await until_done(ws, prompt_id)
    executed = next(f for f in frames if isinstance(f, dict) and f["type"] == "executed")
    names = [image["filename"] for image in executed["data"]["output"]["images"]]
    assert names == ["t2i_00001_.png", "t2i_00002_.png"]
    progress = [
        f["data"]["value"] for f in frames if isinstance(f, dict) and f["type"] == "progress"
    ]
    assert progress == [1, 2, 3]


async def test_identical_resubmission_is_fully_cached_with_old_filenames(
    url: str, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(f"{url}/ws?clientId=c1") as ws:
        first = await submit(http, url, image_graph(), client_id="c1")
        await until_done(ws, first)
        second = await submit(http, url, image_graph(), client_id="c1")
        frames = await until_done(ws, second)
    assert types_of(frames) == [
        "status", "status", "execution_start", "execution_cached", "executed",
        "progress_state", "execution_success", "status", "executing",
    ]  # fmt: skip
    assert frames[3]["data"]["nodes"] == ["1", "2", "3", "4"]
    images = frames[4]["data"]["output"]["images"]
    assert images[0]["filename"] == "formy_normal_00001_.png"
    node = frames[5]["data"]["nodes"]["4"]
    assert (node["state"], node["value"], node["max"]) == ("finished", 1, 1)
    entry = (await history_of(http, url, second))[second]
    assert entry["outputs"]["4"]["images"] == images


async def test_changed_prefix_reruns_only_the_output_node(
    url: str, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(f"{url}/ws?clientId=c1") as ws:
        first = await submit(http, url, image_graph(), client_id="c1")
        await until_done(ws, first)
        second = await submit(http, url, image_graph(prefix="other"), client_id="c1")
        frames = await until_done(ws, second)
    cached = next(f for f in frames if f["type"] == "execution_cached")
    assert cached["data"]["nodes"] == ["1", "2", "3"]
    executing = [f["data"]["node"] for f in frames if f["type"] == "executing"]
    assert executing == ["4", None]


async def test_prompt_without_client_id_broadcasts_progress_but_not_executing(
    url: str, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(f"{url}/ws?clientId=bystander") as ws:
        prompt_id = await submit(http, url, image_graph(steps=2))
        kinds: list[str] = []
        async with asyncio.timeout(10):
            while True:
                msg = await ws.receive()
                if msg.type == aiohttp.WSMsgType.TEXT:
                    data = json.loads(msg.data)
                    kinds.append(data["type"])
                    remaining = data["data"].get("status", {}).get("exec_info", {})
                    if kinds.count("progress") == 2 and remaining.get("queue_remaining") == 0:
                        break
    assert "progress" in kinds
    assert "progress_state" in kinds
    for kind in ("executing", "executed", "execution_start", "execution_success"):
        assert kind not in kinds
    entry = (await history_of(http, url, prompt_id))[prompt_id]
    assert entry["status"]["messages"][-1][0] == "execution_success"


async def test_interrupt_with_running_prompt_id_stops_it(
    url: str, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(f"{url}/ws?clientId=c1") as ws:
        prompt_id = await submit(http, url, image_graph(steps=50, delay=0.05), client_id="c1")
        await next_of_type(ws, "progress")
        async with http.post(f"{url}/interrupt", json={"prompt_id": prompt_id}) as response:
            assert response.status == 200
        frames = await until_done(ws, prompt_id)
    assert types_of(frames)[-3:] == ["execution_interrupted", "status", "executing"]
    interrupted = first_of(frames, "execution_interrupted")
    assert (interrupted["node_id"], interrupted["node_type"]) == ("2", "SlowProgress")
    assert interrupted["executed"] == ["1"]
    entry = (await history_of(http, url, prompt_id))[prompt_id]
    assert (entry["status"]["status_str"], entry["status"]["completed"]) == ("error", False)
    assert entry["status"]["messages"][-1][0] == "execution_interrupted"
    assert entry["outputs"] == {}


async def test_interrupt_with_other_prompt_id_is_a_no_op(
    url: str, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(f"{url}/ws?clientId=c1") as ws:
        prompt_id = await submit(http, url, image_graph(steps=4, delay=0.05), client_id="c1")
        await next_of_type(ws, "progress")
        async with http.post(f"{url}/interrupt", json={"prompt_id": "not-running"}) as response:
            assert response.status == 200
        frames = await until_done(ws, prompt_id)
    assert "execution_success" in types_of(frames)


async def test_interrupt_while_idle_does_not_affect_next_prompt(
    url: str, http: aiohttp.ClientSession
) -> None:
    async with http.post(f"{url}/interrupt") as response:
        assert response.status == 200
    async with http.ws_connect(f"{url}/ws?clientId=c1") as ws:
        prompt_id = await submit(http, url, image_graph(), client_id="c1")
        frames = await until_done(ws, prompt_id)
    assert "execution_success" in types_of(frames)


async def test_queue_delete_removes_pending_prompt_without_history(
    url: str, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(f"{url}/ws?clientId=c1") as ws:
        blocker = await submit(http, url, image_graph(steps=20, delay=0.05), client_id="c1")
        pending = await submit(http, url, image_graph(prefix="pending"), client_id="c1")
        async with http.get(f"{url}/queue") as response:
            queue = await response.json()
        assert [item[1] for item in queue["queue_pending"]] == [pending]
        assert len(queue["queue_running"][0]) == 5
        async with http.post(f"{url}/queue", json={"delete": [pending, blocker]}) as response:
            assert response.status == 200
        async with http.get(f"{url}/queue") as response:
            queue = await response.json()
        assert queue["queue_pending"] == []
        assert [item[1] for item in queue["queue_running"]] == [blocker]
        await http.post(f"{url}/interrupt")
        await until_done(ws, blocker)
    assert await history_of(http, url, pending) == {}


async def test_front_and_number_decide_execution_order(
    url: str, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(f"{url}/ws?clientId=c1") as ws:
        blocker = await submit(http, url, image_graph(steps=10, delay=0.03), client_id="c1")
        late = await submit(http, url, image_graph(prefix="a"), client_id="c1", number=1e9)
        normal = await submit(http, url, image_graph(prefix="b"), client_id="c1")
        front = await submit(http, url, image_graph(prefix="c"), client_id="c1", front=True)
        starts: list[str] = []
        while len(starts) < 4:
            starts.append((await next_of_type(ws, "execution_start"))["data"]["prompt_id"])
    assert starts == [blocker, front, normal, late]


async def test_execution_error_from_fail_on_purpose(url: str, http: aiohttp.ClientSession) -> None:
    graph = image_graph(steps=1)
    graph["3"] = {
        "class_type": "FailOnPurpose",
        "inputs": {"image": ["2", 0], "message": "boom from FailOnPurpose"},
    }
    async with http.ws_connect(f"{url}/ws?clientId=c1") as ws:
        prompt_id = await submit(http, url, graph, client_id="c1")
        frames = await until_done(ws, prompt_id)
        again = await submit(http, url, graph, client_id="c1")
        second = await until_done(ws, again)
    assert collapse(types_of(frames))[-4:] == [
        "executing", "execution_error", "status", "executing"
    ]  # fmt: skip
    error = first_of(frames, "execution_error")
    assert error["node_id"] == "3" and error["node_type"] == "FailOnPurpose"
    assert error["exception_type"] == "RuntimeError"
    assert error["exception_message"] == "boom from FailOnPurpose\n"
    assert error["executed"] == ["1", "2"]
    assert isinstance(error["traceback"], list) and error["traceback"]
    assert error["current_inputs"]["message"] == ["boom from FailOnPurpose"]
    assert sorted(error["current_outputs"]) == ["1", "2", "3", "4"]
    cached = first_of(second, "execution_cached")["nodes"]
    assert cached == ["1", "2"]
    assert "execution_error" in types_of(second)
    entry = (await history_of(http, url, prompt_id))[prompt_id]
    assert entry["status"]["status_str"] == "error"
    assert entry["status"]["messages"][-1][0] == "execution_error"


async def test_same_client_id_twice_silences_both_sockets(
    url: str, http: aiohttp.ClientSession
) -> None:
    older = await http.ws_connect(f"{url}/ws?clientId=dup")
    await next_of_type(older, "status")
    newer = await http.ws_connect(f"{url}/ws?clientId=dup")
    await next_of_type(newer, "status")
    await submit(http, url, image_graph())
    while True:  # the newer socket still hears broadcasts, up to the queue draining
        status = await next_of_type(newer, "status")
        if status["data"]["status"]["exec_info"]["queue_remaining"] == 0:
            break
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await older.receive()
    await older.close()
    await asyncio.sleep(0.1)
    await submit(http, url, image_graph(prefix="after"))
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await newer.receive()
    await newer.close()


async def test_reconnect_during_node_sends_bare_executing(
    url: str, http: aiohttp.ClientSession
) -> None:
    first = await http.ws_connect(f"{url}/ws?clientId=c1")
    prompt_id = await submit(http, url, image_graph(steps=20, delay=0.05), client_id="c1")
    await next_of_type(first, "progress")
    await first.close()
    async with http.ws_connect(f"{url}/ws?clientId=c1") as ws:
        greeting = await ws.receive_json()
        executing = await ws.receive_json()
        assert greeting["data"]["sid"] == "c1"
        assert executing == {"type": "executing", "data": {"node": "2"}}
        await http.post(f"{url}/interrupt", json={"prompt_id": prompt_id})
        await until_done(ws, prompt_id)


def parse_binary(frame: bytes) -> tuple[int, bytes]:
    return struct.unpack(">I", frame[:4])[0], frame[4:]


async def test_legacy_client_gets_jpeg_preview_after_progress(
    url: str, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(f"{url}/ws?clientId=c1") as ws:
        prompt_id = await submit(http, url, image_graph(steps=1), client_id="c1")
        frames = await until_done(ws, prompt_id)
    index = next(i for i, f in enumerate(frames) if isinstance(f, bytes))
    assert frames[index - 1]["type"] == "progress"
    event, rest = parse_binary(frames[index])
    assert event == 1
    assert struct.unpack(">I", rest[:4])[0] == 1
    assert rest[4:6] == b"\xff\xd8"


async def test_metadata_client_gets_preview_with_metadata_before_progress(
    url: str, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(f"{url}/ws?clientId=c1") as ws:
        await next_of_type(ws, "status")
        await ws.send_json({"type": "feature_flags", "data": {"supports_preview_metadata": True}})
        reply = await next_of_type(ws, "feature_flags")
        assert reply["data"]["supports_preview_metadata"] is True
        prompt_id = await submit(http, url, image_graph(steps=1), client_id="c1")
        frames = await until_done(ws, prompt_id)
    index = next(i for i, f in enumerate(frames) if isinstance(f, bytes))
    assert frames[index + 1]["type"] == "progress"
    event, rest = parse_binary(frames[index])
    assert event == 4
    length = struct.unpack(">I", rest[:4])[0]
    meta = json.loads(rest[4 : 4 + length])
    assert meta == {
        "node_id": "2", "prompt_id": prompt_id, "display_node_id": "2",
        "parent_node_id": None, "real_node_id": "2", "image_type": "image/jpeg",
    }  # fmt: skip
    assert rest[4 + length : 6 + length] == b"\xff\xd8"


async def test_greeting_without_client_id_assigns_hex_sid(
    url: str, http: aiohttp.ClientSession
) -> None:
    async with http.ws_connect(f"{url}/ws") as ws:
        greeting = await ws.receive_json()
    sid = greeting["data"]["sid"]
    assert len(sid) == 32 and int(sid, 16) >= 0
    assert greeting["data"]["status"] == {"exec_info": {"queue_remaining": 0}}


async def test_idle_client_receives_only_status(url: str, http: aiohttp.ClientSession) -> None:
    async with http.ws_connect(f"{url}/ws?clientId=idle") as idle:
        async with http.ws_connect(f"{url}/ws?clientId=c1") as ws:
            prompt_id = await submit(http, url, image_graph(), client_id="c1")
            await until_done(ws, prompt_id)
        remaining = []
        async with asyncio.timeout(5):
            while not remaining or remaining[-1] != 0 or len(remaining) < 4:
                message = await idle.receive_json()
                assert message["type"] == "status"
                remaining.append(message["data"]["status"]["exec_info"]["queue_remaining"])
    assert remaining == [0, 1, 1, 0]


async def test_progress_text_frame_is_broadcast(url: str, http: aiohttp.ClientSession) -> None:
    graph = image_graph(steps=1)
    graph["5"] = {"class_type": "GetImageSize", "inputs": {"image": ["1", 0]}}
    graph["6"] = {
        "class_type": "EmptyImage",
        "inputs": {"width": ["5", 0], "height": ["5", 1], "batch_size": 1, "color": 0},
    }
    graph["7"] = {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}}
    async with http.ws_connect(f"{url}/ws?clientId=other") as other:
        async with http.ws_connect(f"{url}/ws?clientId=c1") as ws:
            prompt_id = await submit(http, url, graph, client_id="c1")
            await until_done(ws, prompt_id)
        async with asyncio.timeout(5):
            while (msg := await other.receive()).type != aiohttp.WSMsgType.BINARY:
                pass
    event, rest = parse_binary(msg.data)
    length = struct.unpack(">I", rest[:4])[0]
    assert (event, rest[4 : 4 + length]) == (3, b"5")
    assert rest[4 + length :].decode() == "width: 64, height: 64\n batch size: 1"


async def test_image_to_image_graph_with_lora_and_composite_runs(
    url: str, http: aiohttp.ClientSession
) -> None:
    graph = text_to_image_graph()
    graph["1"] = {
        "class_type": "EmptyImage",
        "inputs": {"width": 96, "height": 80, "batch_size": 1, "color": 0xFF0000},
    }
    graph["2"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["1", 0], "vae": ["4", 2]}}
    graph["10"] = {
        "class_type": "LoraLoader",
        "inputs": {"model": ["4", 0], "clip": ["4", 1], "lora_name": "add_detail.safetensors",
                   "strength_model": 0.8, "strength_clip": 1.0},
    }  # fmt: skip
    sampler = graph["3"]["inputs"]
    sampler.update(model=["10", 0], latent_image=["2", 0], denoise=0.5)
    graph["11"] = {
        "class_type": "ImageCompositeMasked",
        "inputs": {"destination": ["8", 0], "source": ["1", 0], "x": 8, "y": 8,
                   "resize_source": False},
    }  # fmt: skip
    graph["12"] = {
        "class_type": "ImageScale",
        "inputs": {"image": ["11", 0], "upscale_method": "lanczos", "width": 48, "height": 0,
                   "crop": "disabled"},
    }  # fmt: skip
    graph["9"]["inputs"]["images"] = ["12", 0]
    async with http.ws_connect(f"{url}/ws?clientId=c1") as ws:
        prompt_id = await submit(http, url, graph, client_id="c1")
        frames = await until_done(ws, prompt_id)
    assert "execution_success" in types_of(frames)
    image = first_of(frames, "executed")["output"]["images"][0]
    async with http.get(f"{url}/view", params=image) as response:
        assert response.status == 200
        assert response.content_type == "image/png"


async def test_cache_off_reexecutes_identical_prompt(http: aiohttp.ClientSession) -> None:
    config = SimulatorConfig(step_delay=0, cache=False)
    async with run_simulator(config) as base, http.ws_connect(f"{base}/ws?clientId=c1") as ws:
        await until_done(ws, await submit(http, base, image_graph(), client_id="c1"))
        frames = await until_done(ws, await submit(http, base, image_graph(), client_id="c1"))
    assert first_of(frames, "execution_cached")["nodes"] == []
    images = first_of(frames, "executed")["output"]["images"]
    assert images[0]["filename"] == "formy_normal_00002_.png"
