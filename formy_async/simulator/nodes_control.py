"""ControlNet node types: the loader and the nodes that attach a hint image to conditionings."""

from __future__ import annotations

import dataclasses

from .nodes import (
    Conditioning,
    ControlHint,
    ControlNet,
    Env,
    InputSpec,
    JsonDict,
    NodeContext,
    NodeDef,
    NodeResult,
    Sections,
    combo_spec,
    float_spec,
)


def _with_hint(conditioning: Conditioning, hint: ControlHint) -> Conditioning:
    # A second ControlNet chains after the first, as ComfyUI's set_previous_controlnet does.
    return dataclasses.replace(conditioning, controls=(*conditioning.controls, hint))


def _hint(a: JsonDict) -> ControlHint:
    control_net: ControlNet = a["control_net"]
    return ControlHint(
        control_net.name,
        tuple(a["image"]),
        float(a["strength"]),
        float(a.get("start_percent", 0.0)),
        float(a.get("end_percent", 1.0)),
    )


async def _load(ctx: NodeContext, a: JsonDict) -> NodeResult:
    await ctx.env.load_model(str(a["control_net_name"]))
    return NodeResult((ControlNet(str(a["control_net_name"])),))


async def _apply_advanced(ctx: NodeContext, a: JsonDict) -> NodeResult:
    positive: Conditioning = a["positive"]
    negative: Conditioning = a["negative"]
    if float(a["strength"]) == 0:
        return NodeResult((positive, negative))
    hint = _hint(a)
    return NodeResult((_with_hint(positive, hint), _with_hint(negative, hint)))


async def _apply(ctx: NodeContext, a: JsonDict) -> NodeResult:
    conditioning: Conditioning = a["conditioning"]
    if float(a["strength"]) == 0:
        return NodeResult((conditioning,))
    return NodeResult((_with_hint(conditioning, _hint(a)),))


def _loader_inputs(env: Env) -> Sections:
    return {"required": {"control_net_name": combo_spec(env.config.controlnet)}}


def _strength() -> InputSpec:
    return float_spec(1.0, 0.0, 10.0, 0.01)


def _apply_advanced_inputs(env: Env) -> Sections:
    return {
        "required": {
            "positive": ["CONDITIONING"],
            "negative": ["CONDITIONING"],
            "control_net": ["CONTROL_NET"],
            "image": ["IMAGE"],
            "strength": _strength(),
            "start_percent": float_spec(0.0, 0.0, 1.0, 0.001),
            "end_percent": float_spec(1.0, 0.0, 1.0, 0.001),
        },
        "optional": {"vae": ["VAE"]},
    }


def _apply_inputs(env: Env) -> Sections:
    return {
        "required": {
            "conditioning": ["CONDITIONING"],
            "control_net": ["CONTROL_NET"],
            "image": ["IMAGE"],
            "strength": _strength(),
        }
    }


CONTROL_NODES: tuple[NodeDef, ...] = (
    NodeDef(
        "ControlNetLoader", "Load ControlNet Model", "loaders", _loader_inputs,
        ("CONTROL_NET",), _load,
    ),
    NodeDef(
        "ControlNetApplyAdvanced", "Apply ControlNet", "conditioning/controlnet",
        _apply_advanced_inputs, ("CONDITIONING", "CONDITIONING"), _apply_advanced,
        output_names=("positive", "negative"),
    ),
    NodeDef(
        "ControlNetApply", "Apply ControlNet (OLD)", "conditioning/controlnet", _apply_inputs,
        ("CONDITIONING",), _apply, extra_info={"deprecated": True},
    ),
)  # fmt: skip
