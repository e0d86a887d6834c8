"""The models a ComfyUI graph's loader nodes name: what a backend must load to run it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: what a model file's name ends with, whatever folder it is in
MODEL_FILES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".sft", ".onnx")


def loader_models(graph: Mapping[str, Any]) -> frozenset[str]:
    """Every model file a loader node of the graph names (checkpoints, UNets, VAEs, LoRAs,
    CLIPs, ControlNets, upscalers…): string inputs naming a model file, on nodes whose class
    loads something."""
    found = set()
    for node in graph.values():
        if not isinstance(node, Mapping) or not is_loader(node):
            continue
        inputs = node.get("inputs")
        for value in inputs.values() if isinstance(inputs, Mapping) else ():
            if isinstance(value, str) and value.lower().endswith(MODEL_FILES):
                found.add(value)
    return frozenset(found)


def is_loader(node: Mapping[str, Any]) -> bool:
    return "Loader" in str(node.get("class_type", ""))
