"""Node classes as a backend's `/object_info` describes them, and the model folders of loaders."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel

from ..comfy.client import ComfyClient

#: input kinds the editor shows as widgets (values in `widgets_values`); others are sockets
WIDGET_KINDS = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"
#: the values of the editor's extra "control after generate" widget
CONTROL_VALUES = frozenset({"fixed", "increment", "decrement", "randomize"})
#: (node class, input) → the model folder its names come from, for the core loaders
LOADER_FOLDERS: Mapping[tuple[str, str], str] = {
    ("CheckpointLoaderSimple", "ckpt_name"): "checkpoints",
    ("CheckpointLoader", "ckpt_name"): "checkpoints",
    ("ImageOnlyCheckpointLoader", "ckpt_name"): "checkpoints",
    ("unCLIPCheckpointLoader", "ckpt_name"): "checkpoints",
    ("LoraLoader", "lora_name"): "loras",
    ("LoraLoaderModelOnly", "lora_name"): "loras",
    ("VAELoader", "vae_name"): "vae",
    ("ControlNetLoader", "control_net_name"): "controlnet",
    ("DiffControlNetLoader", "control_net_name"): "controlnet",
    ("UNETLoader", "unet_name"): "diffusion_models",
    ("CLIPLoader", "clip_name"): "text_encoders",
    ("DualCLIPLoader", "clip_name1"): "text_encoders",
    ("DualCLIPLoader", "clip_name2"): "text_encoders",
    ("CLIPVisionLoader", "clip_name"): "clip_vision",
    ("UpscaleModelLoader", "model_name"): "upscale_models",
    ("StyleModelLoader", "style_model_name"): "style_models",
}
#: folders probed to place the model input of a loader that is not in LOADER_FOLDERS
PROBED_FOLDERS = ("checkpoints", "loras", "vae", "controlnet", "diffusion_models", "upscale_models")


class InputDef(BaseModel):
    """One input of a node class: its kind (`INT`, `COMBO`, a socket type such as `MODEL`), its
    range or options, and whether the editor shows it as a widget."""

    name: str
    kind: str
    required: bool = True
    options: list[Any] | None = None
    minimum: int | float | None = None
    maximum: int | float | None = None
    step: int | float | None = None
    default: Any = None
    tooltip: str = ""
    force_input: bool = False
    control_after_generate: bool = False
    image_upload: bool = False
    #: a dynamic combo: each key's own inputs (named `<this>.<input>` in the API format)
    revealed: dict[str, list[InputDef]] = {}

    @property
    def is_widget(self) -> bool:
        return self.kind in WIDGET_KINDS and not self.force_input

    @property
    def has_control_widget(self) -> bool:
        """The editor adds a "control after generate" widget after this one."""
        return self.kind == "INT" and (
            self.control_after_generate or self.name in ("seed", "noise_seed")
        )


class NodeDef(BaseModel):
    """One node class: inputs in the order the editor lays out their widgets, outputs."""

    name: str
    display_name: str = ""
    inputs: list[InputDef] = []
    outputs: list[str] = []
    output_node: bool = False

    def input(self, name: str) -> InputDef | None:
        """An input by its API-format name; the inputs a dynamic combo reveals answer to
        `combo.name` and, as older graphs write them, to `name` alone."""
        for found in self.inputs:
            if found.name == name:
                return found
            for revealed in found.revealed.values():
                for inner in _flatten(revealed, found.name):
                    if name in (inner.name, inner.name.rpartition(".")[2]):
                        return inner
        return None


def _flatten(inputs: list[InputDef], prefix: str) -> Iterable[InputDef]:
    for one in inputs:
        named = one.model_copy(update={"name": f"{prefix}.{one.name}"})
        yield named
        for inner in one.revealed.values():
            yield from _flatten(inner, named.name)


def parse_node(name: str, info: Mapping[str, Any]) -> NodeDef:
    """A NodeDef from one `/object_info` entry."""
    sections = info.get("input") or {}
    order = info.get("input_order") or {}
    inputs = []
    for section in ("required", "optional"):
        specs = sections.get(section) or {}
        for input_name in order.get(section) or list(specs):
            if input_name in specs:
                inputs.append(parse_input(input_name, specs[input_name], section == "required"))
    return NodeDef(
        name=name,
        display_name=str(info.get("display_name") or name),
        inputs=inputs,
        outputs=[str(t) for t in info.get("output") or []],
        output_node=bool(info.get("output_node")),
    )


def parse_input(name: str, spec: Any, required: bool) -> InputDef:
    """One input spec, `[TYPE]` or `[TYPE, {options}]`, TYPE a list for a classic combo."""
    kind = spec[0] if isinstance(spec, list) and spec else spec
    extra: dict[str, Any] = spec[1] if isinstance(spec, list) and len(spec) > 1 else {}
    extra = extra if isinstance(extra, dict) else {}
    fields: dict[str, Any] = {
        "name": name,
        "required": required,
        "minimum": _number(extra.get("min")),
        "maximum": _number(extra.get("max")),
        "step": _number(extra.get("step")),
        "default": extra.get("default"),
        "tooltip": str(extra.get("tooltip") or ""),
        "force_input": bool(extra.get("forceInput")),
        "control_after_generate": bool(extra.get("control_after_generate")),
        "image_upload": bool(extra.get("image_upload")),
    }
    if isinstance(kind, list):
        return InputDef(kind="COMBO", options=list(kind), **fields)
    if kind == DYNAMIC_COMBO:
        revealed = {
            str(option.get("key")): _revealed(option.get("inputs") or {})
            for option in extra.get("options") or []
            if isinstance(option, dict)
        }
        return InputDef(kind="COMBO", options=list(revealed), revealed=revealed, **fields)
    if kind == "COMBO":
        return InputDef(kind="COMBO", options=list(extra.get("options") or []), **fields)
    return InputDef(kind=str(kind), **fields)


def _revealed(sections: Mapping[str, Any]) -> list[InputDef]:
    return [
        parse_input(name, spec, section == "required")
        for section in ("required", "optional")
        for name, spec in (sections.get(section) or {}).items()
    ]


def _number(value: Any) -> int | float | None:
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


async def fetch_nodes(client: ComfyClient, classes: Iterable[str]) -> dict[str, NodeDef]:
    """The definitions of these node classes the backend has (`/object_info/{class}`);
    classes it lacks are left out."""
    names = sorted(set(classes))
    infos = await asyncio.gather(*(client.node_info(name) for name in names))
    return {name: parse_node(name, info) for name, info in zip(names, infos, strict=True) if info}


async def fetch_models(client: ComfyClient, folders: Iterable[str]) -> dict[str, list[str]]:
    """The file names the backend lists in each model folder."""
    names = sorted(set(folders))
    lists = await asyncio.gather(*(client.models(name) for name in names))
    return dict(zip(names, lists, strict=True))


def model_folder(
    node: NodeDef, spec: InputDef, models: Mapping[str, list[str]] | None = None
) -> str | None:
    """The model folder a loader's input names a file of: a core loader's known folder, else
    the probed folder that lists every one of the input's options."""
    known = LOADER_FOLDERS.get((node.name, spec.name))
    if known or spec.kind != "COMBO" or not spec.options or models is None:
        return known
    if not spec.name.endswith("_name"):
        return None
    options = set(spec.options)
    return next((f for f, names in models.items() if names and options <= set(names)), None)
