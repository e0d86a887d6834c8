"""The simulator's HTTP surface: info routes, /api prefix, Origin check, uploads, /view, history."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from PIL import Image

from formy_async.simulator import SimulatorConfig, run_simulator

Graph = dict[str, Any]


@pytest.fixture
async def url() -> AsyncIterator[str]:
    async with run_simulator(SimulatorConfig(step_delay=0, max_upload_size=64 * 1024)) as base:
        yield base


def png(size: tuple[int, int], colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


async def upload(
    http: aiohttp.ClientSession, url: str, data: bytes, name: str = "pic.png", **fields: str
) -> tuple[int, Any]:
    form = aiohttp.FormData()
    form.add_field("image", data, filename=name, content_type="image/png")
    for key, value in fields.items():
        form.add_field(key, value)
    async with http.post(f"{url}/upload/image", data=form) as response:
        body = await response.json() if response.status == 200 else await response.text()
        return response.status, body


async def run_to_history(http: aiohttp.ClientSession, url: str, graph: Graph) -> Any:
    async with http.post(f"{url}/prompt", json={"prompt": graph}) as response:
        assert response.status == 200, await response.text()
        prompt_id = (await response.json())["prompt_id"]
    async with asyncio.timeout(10):
        while True:
            async with http.get(f"{url}/history/{prompt_id}") as response:
                body = await response.json()
            if body:
                return body[prompt_id]
            await asyncio.sleep(0.02)


def text_to_image(width: int, height: int, batch: int = 1) -> Graph:
    return {
        "1": {"class_type": "CheckpointLoaderSimple",
              "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
        "2": {"class_type": "EmptyLatentImage",
              "inputs": {"width": width, "height": height, "batch_size": batch}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse", "clip": ["1", 1]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "5": {"class_type": "KSampler",
              "inputs": {"seed": 7, "steps": 2, "cfg": 8, "sampler_name": "euler",
                         "scheduler": "karras", "denoise": 1, "model": ["1", 0],
                         "positive": ["3", 0], "negative": ["4", 0], "latent_image": ["2", 0]}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "t"}},
    }  # fmt: skip


async def test_system_stats_reports_cpu_and_version(url: str, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{url}/system_stats") as response:
        body = await response.json()
    assert body["system"]["comfyui_version"] == "0.3.64"
    assert body["devices"][0]["type"] == "cpu"
    assert body["devices"][0]["index"] is None


async def test_features_lists_preview_metadata(url: str, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{url}/features") as response:
        assert await response.json() == {
            "supports_preview_metadata": True, "max_upload_size": 64 * 1024
        }  # fmt: skip


async def test_object_info_describes_ksampler(url: str, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{url}/object_info") as response:
        info = (await response.json())["KSampler"]
    assert info["output"] == ["LATENT"]
    assert info["input"]["required"]["steps"][1]["default"] == 20
    assert info["input_order"]["required"][0] == "model"
    assert info["output_node"] is False


async def test_object_info_of_unknown_class_is_empty(url: str, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{url}/object_info/Nope") as response:
        assert (response.status, await response.json()) == (200, {})


async def test_api_prefix_serves_the_same_routes(url: str, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{url}/api/prompt") as response:
        assert await response.json() == {"exec_info": {"queue_remaining": 0}}
    async with http.ws_connect(f"{url}/api/ws?clientId=a") as ws:
        greeting = await ws.receive_json()
    assert greeting["data"]["sid"] == "a"


@pytest.mark.parametrize("origin", ["http://evil.example", "http://localhost:{port}"])
async def test_mismatched_origin_is_forbidden(
    url: str, http: aiohttp.ClientSession, origin: str
) -> None:
    port = url.rsplit(":", 1)[1]
    headers = {"Origin": origin.format(port=port)}
    async with http.get(f"{url}/queue", headers=headers) as response:
        assert response.status == 403
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await http.ws_connect(f"{url}/ws", headers=headers)
    assert info.value.status == 403


async def test_matching_origin_is_allowed(url: str, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{url}/queue", headers={"Origin": url}) as response:
        assert response.status == 200


async def test_oversized_body_gets_413_text(url: str, http: aiohttp.ClientSession) -> None:
    async with http.post(f"{url}/prompt", data=b"x" * (65 * 1024)) as response:
        assert response.status == 413
        assert await response.text() == "Maximum request body size 65536 exceeded."


async def test_view_returns_png_of_requested_size(url: str, http: aiohttp.ClientSession) -> None:
    entry = await run_to_history(http, url, text_to_image(136, 88, batch=2))
    images = entry["outputs"]["7"]["images"]
    assert [image["filename"] for image in images] == ["t_00001_.png", "t_00002_.png"]
    async with http.get(f"{url}/view", params=images[1]) as response:
        assert response.content_type == "image/png"
        data = await response.read()
    with Image.open(io.BytesIO(data)) as picture:
        assert picture.size == (136, 88)
        assert json.loads(picture.text["prompt"])["5"]["inputs"]["seed"] == 7  # type: ignore[attr-defined]


async def test_different_seeds_draw_different_pictures(
    url: str, http: aiohttp.ClientSession
) -> None:
    pictures = []
    for seed in (1, 2):
        graph = text_to_image(64, 64)
        graph["5"]["inputs"]["seed"] = seed
        image = (await run_to_history(http, url, graph))["outputs"]["7"]["images"][0]
        async with http.get(f"{url}/view", params=image) as response:
            pictures.append(await response.read())
    assert pictures[0] != pictures[1]


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"filename": "/etc/passwd"}, 400),
        ({"filename": "../x.png"}, 400),
        ({"filename": "x.png", "type": "nope"}, 400),
        ({"filename": "x.png", "subfolder": "../.."}, 403),
        ({"filename": "missing.png"}, 404),
    ],
)
async def test_view_rejects_bad_requests(
    url: str, http: aiohttp.ClientSession, params: dict[str, str], status: int
) -> None:
    async with http.get(f"{url}/view", params=params) as response:
        assert response.status == status


async def test_view_preview_reencodes_as_webp(url: str, http: aiohttp.ClientSession) -> None:
    status, body = await upload(http, url, png((20, 10), (1, 2, 3)))
    assert status == 200
    params = {"filename": body["name"], "type": "input", "preview": "webp;50"}
    async with http.get(f"{url}/view", params=params) as response:
        assert response.content_type == "image/webp"
    params = {"filename": f"{body['name']} [input]", "channel": "a"}
    async with http.get(f"{url}/view", params=params) as response:
        assert response.content_type == "image/png"


async def test_upload_dedupes_identical_bytes_and_numbers_different_ones(
    url: str, http: aiohttp.ClientSession
) -> None:
    red, blue, green = png((8, 8), (255, 0, 0)), png((8, 8), (0, 0, 255)), png((8, 8), (0, 255, 0))
    assert (await upload(http, url, red))[1] == {
        "name": "pic.png",
        "subfolder": "",
        "type": "input",
    }
    assert (await upload(http, url, red))[1]["name"] == "pic.png"
    assert (await upload(http, url, blue))[1]["name"] == "pic (1).png"
    assert (await upload(http, url, green))[1]["name"] == "pic (2).png"
    assert (await upload(http, url, blue))[1]["name"] == "pic (1).png"
    assert (await upload(http, url, green, overwrite="true"))[1]["name"] == "pic.png"


async def test_upload_needs_an_image_part_with_filename(
    url: str, http: aiohttp.ClientSession
) -> None:
    form = aiohttp.FormData()
    form.add_field("file", png((4, 4), (0, 0, 0)), filename="a.png")
    async with http.post(f"{url}/upload/image", data=form) as response:
        assert (response.status, await response.read()) == (400, b"")


async def test_upload_outside_base_dir_is_rejected(url: str, http: aiohttp.ClientSession) -> None:
    status, _ = await upload(http, url, png((4, 4), (0, 0, 0)), subfolder="../../etc")
    assert status == 400


async def test_uploaded_image_flows_through_load_scale_blur_save(
    url: str, http: aiohttp.ClientSession
) -> None:
    _, body = await upload(http, url, png((32, 24), (10, 200, 30)), name="src.png")
    async with http.get(f"{url}/object_info/LoadImage") as response:
        listed = (await response.json())["LoadImage"]["input"]["required"]["image"]
    assert listed == [["src.png"], {"image_upload": True}]
    graph: Graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": body["name"]}},
        "2": {"class_type": "ImageScaleBy",
              "inputs": {"image": ["1", 0], "upscale_method": "bilinear", "scale_by": 2.0}},
        "3": {"class_type": "ImageBlur",
              "inputs": {"image": ["2", 0], "blur_radius": 3, "sigma": 1.5}},
        "4": {"class_type": "SaveImage",
              "inputs": {"images": ["3", 0], "filename_prefix": "formy_upload/scaled"}},
    }  # fmt: skip
    image = (await run_to_history(http, url, graph))["outputs"]["4"]["images"][0]
    assert image == {"filename": "scaled_00001_.png", "subfolder": "formy_upload", "type": "output"}
    async with http.get(f"{url}/view", params=image) as response:
        with Image.open(io.BytesIO(await response.read())) as picture:
            assert picture.size == (64, 48)


async def test_history_supports_max_items_and_delete(url: str, http: aiohttp.ClientSession) -> None:
    graph: Graph = {
        "1": {"class_type": "EmptyImage",
              "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }  # fmt: skip
    first = (await run_to_history(http, url, graph))["prompt"][1]
    graph["1"]["inputs"]["color"] = 1
    second = (await run_to_history(http, url, graph))["prompt"][1]
    async with http.get(f"{url}/history", params={"max_items": "1"}) as response:
        assert list(await response.json()) == [second]
    async with http.post(f"{url}/history", json={"delete": [second]}) as response:
        assert response.status == 200
    async with http.get(f"{url}/history") as response:
        assert list(await response.json()) == [first]


async def test_models_lists_configured_checkpoints(url: str, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{url}/models/checkpoints") as response:
        assert "sd_xl_base_1.0.safetensors" in await response.json()
    async with http.get(f"{url}/models/nope") as response:
        assert response.status == 404


async def test_outputs_land_in_the_given_data_dir(
    tmp_path: Any, http: aiohttp.ClientSession
) -> None:
    graph: Graph = {
        "1": {"class_type": "EmptyImage",
              "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "d"}},
    }  # fmt: skip
    async with run_simulator(SimulatorConfig(step_delay=0, data_dir=tmp_path)) as base:
        await run_to_history(http, base, graph)
    assert (tmp_path / "output" / "d_00001_.png").is_file()
