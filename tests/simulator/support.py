"""Helpers for the profile, jobs and media tests: the two profiles, submitting, waiting."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from formy_async.simulator import SimulatorConfig, run_simulator

OLD = "0.3.64"
NEW = "0.38.1"
PROFILES = (OLD, NEW)
Graph = dict[str, Any]


@asynccontextmanager
async def simulator(version: str, **settings: Any) -> AsyncIterator[str]:
    config = SimulatorConfig(comfyui_version=version, step_delay=0, **settings)
    async with run_simulator(config) as url:
        yield url


async def post_prompt(
    http: aiohttp.ClientSession, url: str, graph: Graph, **extra: Any
) -> tuple[int, Any]:
    async with http.post(f"{url}/prompt", json={"prompt": graph, **extra}) as response:
        return response.status, await response.json()


async def submit(http: aiohttp.ClientSession, url: str, graph: Graph, **extra: Any) -> str:
    status, body = await post_prompt(http, url, graph, **extra)
    assert status == 200, body
    return str(body["prompt_id"])


async def get_json(http: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with http.get(url) as response:
        return response.status, await response.json(content_type=None)


async def history_of(http: aiohttp.ClientSession, url: str, prompt_id: str) -> Any:
    """Poll /history/{id} until the prompt has finished."""
    async with asyncio.timeout(20):
        while True:
            _, body = await get_json(http, f"{url}/history/{prompt_id}")
            if body:
                return body[prompt_id]
            await asyncio.sleep(0.02)


async def run_to_history(http: aiohttp.ClientSession, url: str, graph: Graph) -> Any:
    return await history_of(http, url, await submit(http, url, graph))


async def fetch(http: aiohttp.ClientSession, url: str, item: dict[str, str]) -> tuple[bytes, str]:
    """A file named by an output item, with its Content-Type."""
    params = {key: item[key] for key in ("filename", "subfolder", "type")}
    async with http.get(f"{url}/view", params=params) as response:
        assert response.status == 200
        return await response.read(), response.headers["Content-Type"]


async def until_running(http: aiohttp.ClientSession, url: str, prompt_id: str) -> None:
    async with asyncio.timeout(10):
        while True:
            _, body = await get_json(http, f"{url}/queue")
            if any(item[1] == prompt_id for item in body["queue_running"]):
                return
            await asyncio.sleep(0.01)


async def next_message(ws: aiohttp.ClientWebSocketResponse, kind: str) -> Any:
    async with asyncio.timeout(10):
        while True:
            msg = await ws.receive()
            if msg.type == aiohttp.WSMsgType.TEXT and json.loads(msg.data)["type"] == kind:
                return json.loads(msg.data)["data"]


def empty_images(batch: int = 1, colour: int = 0x336699, size: int = 64) -> Graph:
    inputs = {"width": size, "height": size, "batch_size": batch, "color": colour}
    return {"class_type": "EmptyImage", "inputs": inputs}


def slow_graph(steps: int = 100, delay: float = 0.05, prefix: str = "slow") -> Graph:
    """A prompt that runs for steps x delay seconds unless interrupted."""
    return {
        "1": empty_images(colour=steps),
        "2": {
            "class_type": "SlowProgress",
            "inputs": {"image": ["1", 0], "steps": steps, "delay": delay},
        },
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }


def save_graph(colour: int = 0x112233, prefix: str = "quick") -> Graph:
    return {
        "1": empty_images(colour=colour),
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": prefix}},
    }


def distinct_images(batch: int) -> Graph:
    """Nodes "1".."6" ending in VAEDecode "6": a batch of different 64x64 pictures (EmptyImage's
    are all alike, and animated WEBP/PNG encoders merge identical frames)."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple",
              "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
        "2": {"class_type": "EmptyLatentImage",
              "inputs": {"width": 64, "height": 64, "batch_size": batch}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "frames", "clip": ["1", 1]}},
        "4": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["1", 1]}},
        "5": {"class_type": "KSampler",
              "inputs": {"seed": 3, "steps": 1, "cfg": 7, "sampler_name": "euler",
                         "scheduler": "normal", "denoise": 1, "model": ["1", 0],
                         "positive": ["3", 0], "negative": ["4", 0], "latent_image": ["2", 0]}},
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
    }  # fmt: skip
