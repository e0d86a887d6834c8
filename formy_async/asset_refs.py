"""`core/ASSET` references in a graph: where a node input names an uploaded asset by its id."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from .errors import MissingAsset

ASSET_TYPE = "core/ASSET"


def _reference_id(node_id: str, name: str, value: Mapping[str, Any]) -> str:
    info = value.get("info")
    asset_id = info.get("id") if isinstance(info, Mapping) else None
    if not isinstance(asset_id, str) or not asset_id:
        raise MissingAsset(
            f'node {node_id} input {name!r}: a core/ASSET reference needs "info": {{"id": …}}',
            details={"node_id": node_id, "input": name},
        )
    return asset_id


def asset_ids(graph: Mapping[str, Any]) -> dict[str, list[tuple[str, str]]]:
    """Each asset id the graph's inputs refer to, with the (node, input) places that name it.

    A malformed reference (no `info.id`) is refused with MissingAsset naming its place.
    """
    found: dict[str, list[tuple[str, str]]] = {}
    for node_id, node in graph.items():
        inputs = node.get("inputs") if isinstance(node, Mapping) else None
        if not isinstance(inputs, Mapping):
            continue
        for name, value in inputs.items():
            if isinstance(value, Mapping) and value.get("__type") == ASSET_TYPE:
                asset_id = _reference_id(str(node_id), str(name), value)
                found.setdefault(asset_id, []).append((str(node_id), str(name)))
    return found


def with_files(graph: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, Any]:
    """A copy of the graph with each reference replaced by the file name its asset has on the
    ComfyUI server (as uploaded there); `names` maps asset ids to those names."""
    rendered: dict[str, Any] = copy.deepcopy(dict(graph))
    for asset_id, places in asset_ids(graph).items():
        for node_id, name in places:
            rendered[node_id]["inputs"][name] = names[asset_id]
    return rendered
