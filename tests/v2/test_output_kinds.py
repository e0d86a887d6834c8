"""Outputs of every workflow kind come out of the v2 routes as v2's output kinds."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from comfy_sdk import AsyncComfy
from PIL import Image

from formy_async.auth import mint_token
from formy_async.settings import Settings
from tests.conftest import ROOT, TEST_SECRET, StackFactory

GRAPHS_TOKEN = mint_token(TEST_SECRET, "hana", graphs=True, ttl=3600)
#: the current line has EmptyAudio; an operator widens the allowlist to take it
LATEST = pytest.mark.parametrize("comfyui_version", ["0.38.1"], indirect=True)


def _png() -> bytes:
    data = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 120, 200)).save(data, format="PNG")
    return data.getvalue()


@LATEST
async def test_a_video_workflow_gives_a_video_and_an_animated_image(
    make_stack: StackFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    graph: dict[str, Any] = json.loads((ROOT / "workflows" / "image_to_video.json").read_text())
    graph["3"]["inputs"]["amount"] = 4
    async with make_stack() as stack:
        monkeypatch.setenv("COMFY_BASE_URL", stack.url)
        async with AsyncComfy(api_key=GRAPHS_TOKEN) as comfy:
            workflow = comfy.workflows.from_json(graph)
            frame = comfy.assets.from_bytes(_png(), filename="frame.png")
            workflow.set_input("1", "image", frame)
            job = await (await comfy.submit(workflow)).result()
            kinds = {o.node_id: (o.type, o.content_type) for o in job.outputs}
            video = await job.get_outputs("5")[0].to_bytes(range=(0, 11))
    assert kinds == {"5": ("video", "video/mp4"), "6": ("image", "image/webp")}
    assert video[4:8] == b"ftyp"  # the first bytes of an MP4, by Range


@LATEST
async def test_an_audio_graph_gives_audio_once_the_operator_allows_its_nodes(
    make_stack: StackFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    nodes = [*Settings.model_fields["raw_graph_nodes"].default, "EmptyAudio"]
    graph = {
        "1": {"class_type": "EmptyAudio", "inputs": {"duration": 0.5, "sample_rate": 44100,
                                                     "channels": 1}},
        "2": {"class_type": "SaveAudio", "inputs": {"audio": ["1", 0], "filename_prefix": "a"}},
    }  # fmt: skip
    async with make_stack(raw_graph_nodes=nodes) as stack:
        monkeypatch.setenv("COMFY_BASE_URL", stack.url)
        async with AsyncComfy(api_key=GRAPHS_TOKEN) as comfy:
            job = await (await comfy.submit(comfy.workflows.from_json(graph))).result()
    [output] = job.outputs
    assert (output.type, output.content_type) == ("audio", "audio/flac")
