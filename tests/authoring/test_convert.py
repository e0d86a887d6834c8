"""The editor's workflow format converted to the API format with the simulator's nodes."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from formy_async.authoring.convert import ConversionError, convert, editor_classes
from formy_async.authoring.nodes import NodeDef

from .conftest import EXPORTS, simulator_nodes

EDITOR = json.loads((EXPORTS / "text_to_image.editor.json").read_text())


@pytest.fixture
async def nodes(simulator_url: str) -> dict[str, NodeDef]:
    classes = editor_classes(EDITOR) | {"LoadImage", "ImageScaleBy"}
    return await simulator_nodes(simulator_url, classes)


def _node(data: dict[str, Any], node_id: int) -> dict[str, Any]:
    found: dict[str, Any] = next(n for n in data["nodes"] if n["id"] == node_id)
    return found


def test_bypassed_node_hands_its_inputs_to_its_outputs(nodes: dict[str, NodeDef]) -> None:
    graph = convert(EDITOR, nodes).graph
    assert "10" not in graph  # the bypassed LoraLoader
    assert graph["3"]["inputs"]["model"] == ["4", 0]
    assert graph["6"]["inputs"]["clip"] == ["4", 1]


def test_muted_node_is_left_out(nodes: dict[str, NodeDef]) -> None:
    converted = convert(EDITOR, nodes)
    assert "11" not in converted.graph
    assert "node 11 (PreviewImage) is muted: left out" in converted.notes


def test_input_fed_by_a_muted_node_is_dropped(nodes: dict[str, NodeDef]) -> None:
    data = copy.deepcopy(EDITOR)
    _node(data, 6)["mode"] = 2  # the positive prompt's encoder, muted
    assert "positive" not in convert(data, nodes).graph["3"]["inputs"]


def test_reroute_is_followed_to_its_source(nodes: dict[str, NodeDef]) -> None:
    graph = convert(EDITOR, nodes).graph
    assert "12" not in graph
    assert graph["7"]["inputs"]["clip"] == ["4", 1]


def test_primitive_value_goes_into_every_input_it_feeds(nodes: dict[str, NodeDef]) -> None:
    data = copy.deepcopy(EDITOR)
    _node(data, 14)["widgets_values"] = [640, "fixed"]
    inputs = convert(data, nodes).graph["5"]["inputs"]
    assert (inputs["width"], inputs["height"]) == (640, 640)


def test_widget_values_follow_object_info_order_past_the_seed_control(
    nodes: dict[str, NodeDef],
) -> None:
    inputs = convert(EDITOR, nodes).graph["3"]["inputs"]
    assert {k: inputs[k] for k in ("steps", "cfg", "sampler_name", "scheduler", "denoise")} == {
        "steps": 20,
        "cfg": 7.0,
        "sampler_name": "euler",
        "scheduler": "normal",
        "denoise": 1.0,
    }


def test_image_loader_upload_value_is_not_an_input(nodes: dict[str, NodeDef]) -> None:
    data = {
        "nodes": [
            {"id": 1, "type": "LoadImage", "widgets_values": ["photo.png", "image"]},
            {
                "id": 2,
                "type": "ImageScaleBy",
                "inputs": [{"name": "image", "type": "IMAGE", "link": 1}],
                "widgets_values": ["lanczos", 2.0],
            },
        ],
        "links": [[1, 1, 0, 2, 0, "IMAGE"]],
    }
    graph = convert(data, nodes).graph
    assert graph["1"]["inputs"] == {"image": "photo.png"}
    assert graph["2"]["inputs"] == {"image": ["1", 0], "upscale_method": "lanczos", "scale_by": 2.0}


def test_links_written_as_objects_convert_like_link_arrays(nodes: dict[str, NodeDef]) -> None:
    data = copy.deepcopy(EDITOR)
    fields = ("id", "origin_id", "origin_slot", "target_id", "target_slot", "type")
    data["links"] = [dict(zip(fields, link, strict=True)) for link in data["links"]]
    assert convert(data, nodes).graph == convert(EDITOR, nodes).graph


def test_node_class_the_backend_lacks_is_refused_by_name(nodes: dict[str, NodeDef]) -> None:
    data = copy.deepcopy(EDITOR)
    _node(data, 8)["type"] = "VAEDecodeTiledMagic"
    with pytest.raises(ConversionError, match=r"does not have: 8 \(VAEDecodeTiledMagic\)"):
        convert(data, nodes)


def _with_subgraph(data: dict[str, Any]) -> dict[str, Any]:
    """The editor fixture with VAEDecode (8) and SaveImage (9) moved into a subgraph (20)."""
    data = copy.deepcopy(data)
    data["nodes"] = [n for n in data["nodes"] if n["id"] not in (8, 9, 11)]
    data["links"] = [link for link in data["links"] if link[0] not in (10, 16)]
    for link in data["links"]:
        if link[0] in (8, 9):
            link[3:5] = [20, 0 if link[0] == 9 else 1]
    data["nodes"].append(
        {
            "id": 20,
            "type": "sg-decode",
            "mode": 0,
            "inputs": [
                {"name": "samples", "type": "LATENT", "link": 9},
                {"name": "vae", "type": "VAE", "link": 8},
            ],
            "outputs": [],
            "widgets_values": [],
        }
    )
    inner_links = [
        {"id": 1, "origin_id": -10, "origin_slot": 0, "target_id": 1, "target_slot": 0},
        {"id": 2, "origin_id": -10, "origin_slot": 1, "target_id": 1, "target_slot": 1},
        {"id": 3, "origin_id": 1, "origin_slot": 0, "target_id": 2, "target_slot": 0},
    ]
    subgraph = {
        "id": "sg-decode",
        "name": "Decode and save",
        "inputNode": {"id": -10},
        "outputNode": {"id": -20},
        "inputs": [
            {"name": "samples", "type": "LATENT", "linkIds": [1]},
            {"name": "vae", "type": "VAE", "linkIds": [2]},
        ],
        "outputs": [],
        "nodes": [
            {
                "id": 1,
                "type": "VAEDecode",
                "inputs": [
                    {"name": "samples", "type": "LATENT", "link": 1},
                    {"name": "vae", "type": "VAE", "link": 2},
                ],
                "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [3]}],
            },
            {
                "id": 2,
                "type": "SaveImage",
                "inputs": [{"name": "images", "type": "IMAGE", "link": 3}],
                "widgets_values": ["ComfyUI"],
            },
        ],
        "links": inner_links,
    }
    data["definitions"] = {"subgraphs": [subgraph]}
    return data


def _prompt_subgraph(instance: dict[str, Any]) -> dict[str, Any]:
    """The editor fixture with the positive prompt's encoder (6) inside a subgraph (21) whose
    text is a promoted widget; `instance` adds to the instance node."""
    data = copy.deepcopy(EDITOR)
    data["nodes"] = [n for n in data["nodes"] if n["id"] != 6]
    for link in data["links"]:
        if link[0] == 5:
            link[3:5] = [21, 0]
        if link[0] == 3:
            link[1:3] = [21, 0]
    node = {
        "id": 21,
        "type": "sg-prompt",
        "inputs": [
            {"name": "clip", "type": "CLIP", "link": 5},
            {"name": "text", "type": "STRING", "widget": {"name": "text"}, "link": None},
        ],
        "outputs": [{"name": "CONDITIONING", "type": "CONDITIONING", "links": [3]}],
        **instance,
    }
    data["nodes"].append(node)
    links = [
        {"id": 1, "origin_id": -10, "origin_slot": 0, "target_id": 1, "target_slot": 0},
        {"id": 2, "origin_id": -10, "origin_slot": 1, "target_id": 1, "target_slot": 1},
        {"id": 3, "origin_id": 1, "origin_slot": 0, "target_id": -20, "target_slot": 0},
    ]
    encoder = {
        "id": 1,
        "type": "CLIPTextEncode",
        "title": "Positive prompt",
        "inputs": [
            {"name": "clip", "type": "CLIP", "link": 1},
            {"name": "text", "type": "STRING", "widget": {"name": "text"}, "link": 2},
        ],
        "outputs": [{"name": "CONDITIONING", "type": "CONDITIONING", "links": [3]}],
        "widgets_values": ["inside"],
    }
    subgraph = {
        "id": "sg-prompt",
        "name": "Prompt",
        "inputs": [{"name": "clip", "type": "CLIP"}, {"name": "text", "type": "STRING"}],
        "outputs": [{"name": "CONDITIONING", "type": "CONDITIONING"}],
        "nodes": [encoder],
        "links": links,
    }
    data["definitions"] = {"subgraphs": [subgraph]}
    return data


def test_subgraph_nodes_are_named_instance_colon_inner(nodes: dict[str, NodeDef]) -> None:
    graph = convert(_with_subgraph(EDITOR), nodes).graph
    assert sorted(graph) == ["20:1", "20:2", "3", "4", "5", "6", "7"]
    assert graph["20:1"]["inputs"] == {"samples": ["3", 0], "vae": ["4", 2]}
    assert graph["20:2"]["inputs"] == {"images": ["20:1", 0], "filename_prefix": "ComfyUI"}


def test_subgraph_output_feeds_the_parent_graph(nodes: dict[str, NodeDef]) -> None:
    graph = convert(_prompt_subgraph({"widgets_values": ["a red fox"]}), nodes).graph
    assert graph["3"]["inputs"]["positive"] == ["21:1", 0]
    assert graph["21:1"]["inputs"] == {"clip": ["4", 1], "text": "a red fox"}


def test_subgraph_proxy_widgets_set_the_inner_nodes_values(nodes: dict[str, NodeDef]) -> None:
    instance = {"properties": {"proxyWidgets": [["-1", "text"]]}, "widgets_values": ["proxied"]}
    assert convert(_prompt_subgraph(instance), nodes).graph["21:1"]["inputs"]["text"] == "proxied"


def test_muted_subgraph_leaves_its_nodes_out(nodes: dict[str, NodeDef]) -> None:
    data = _with_subgraph(EDITOR)
    _node(data, 20)["mode"] = 2
    assert not {"20:1", "20:2"} & set(convert(data, nodes).graph)


def test_subgraph_that_contains_itself_is_refused(nodes: dict[str, NodeDef]) -> None:
    data = _with_subgraph(EDITOR)
    data["definitions"]["subgraphs"][0]["nodes"].append({"id": 5, "type": "sg-decode"})
    with pytest.raises(ConversionError, match="one contains itself"):
        convert(data, nodes)


def test_group_node_is_refused_naming_the_feature(nodes: dict[str, NodeDef]) -> None:
    data = copy.deepcopy(EDITOR)
    _node(data, 8)["type"] = "workflow>Decode and save"
    with pytest.raises(ConversionError, match="group node"):
        convert(data, nodes)
