"""Animated image and text preview node types, per profile: SaveAnimatedWEBP/PNG, PreviewAny."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

from . import media
from .files import next_save_path
from .nodes import (
    CLASSIC_HIDDEN,
    V3_HIDDEN,
    Env,
    Images,
    InputSpec,
    JsonDict,
    NodeContext,
    NodeDef,
    NodeResult,
    RunFn,
    Sections,
    combo_spec,
    float_spec,
    format_value,
    v3_combo,
)

_IMAGES = "comfy_extras.nodes_images"
InputsFn = Callable[[Env], Sections]


def metadata_texts(ctx: NodeContext) -> dict[str, str]:
    """The prompt and every extra_pnginfo entry as JSON text, the way save nodes embed them."""
    texts = {"prompt": json.dumps(ctx.prompt)}
    for key, value in (ctx.extra_pnginfo or {}).items():
        texts[key] = json.dumps(value)
    return texts


def output_path(ctx: NodeContext, prefix: str, size: tuple[int, int], ext: str) -> tuple[Path, str]:
    """The next free `{prefix}_{counter:05}_.{ext}` in output/ and its subfolder."""
    base = ctx.env.dirs.output
    folder, stem, subfolder, counter = next_save_path(base, prefix, *size)
    return folder / f"{stem}_{counter:05}_.{ext}", subfolder


def saved_item(path: Path, subfolder: str, dir_type: str = "output") -> JsonDict:
    return {"filename": path.name, "subfolder": subfolder, "type": dir_type}


async def _save_webp(ctx: NodeContext, a: JsonDict) -> NodeResult:
    images: Images = a["images"]
    path, subfolder = output_path(ctx, str(a["filename_prefix"]), images[0].size, "webp")
    texts = metadata_texts(ctx)
    # EXIF tags: Make (0x0110) carries the prompt, extra_pnginfo counts down from Model (0x010f).
    exif = {0x0110: f"prompt:{texts.pop('prompt')}"}
    exif.update({0x010F - i: f"{key}:{text}" for i, (key, text) in enumerate(texts.items())})
    await asyncio.to_thread(
        media.save_animated_webp, images, path, float(a["fps"]), bool(a["lossless"]),
        int(a["quality"]), str(a["method"]), exif,
    )  # fmt: skip
    # 0.3.64 calls one frame not animated; newer releases leave the key out for one frame.
    return NodeResult((images,), _animated_ui(ctx, path, subfolder, len(images), len(images) != 1))


def _animated_ui(
    ctx: NodeContext, path: Path, subfolder: str, frames: int, animated: bool
) -> JsonDict:
    ui: JsonDict = {"images": [saved_item(path, subfolder)]}
    if frames > 1 or not ctx.env.config.is_new_profile:
        ui["animated"] = [animated]
    return ui


async def _save_apng(ctx: NodeContext, a: JsonDict) -> NodeResult:
    images: Images = a["images"]
    path, subfolder = output_path(ctx, str(a["filename_prefix"]), images[0].size, "png")
    await asyncio.to_thread(
        media.save_animated_png, images, path, float(a["fps"]), int(a["compress_level"]),
        metadata_texts(ctx),
    )  # fmt: skip
    # 0.3.64 says animated even for one frame (observed).
    return NodeResult((images,), _animated_ui(ctx, path, subfolder, len(images), True))


async def _preview_any(ctx: NodeContext, a: JsonDict) -> NodeResult:
    source = a.get("source")
    if isinstance(source, str):
        value = source
    elif isinstance(source, int | float | bool):
        value = str(source)
    elif source is None:
        value = "None"
    else:
        try:
            value = json.dumps(source)
        except (TypeError, ValueError):
            value = str(format_value(source))
    return NodeResult((value,), {"text": [value]})


def _image_saver_inputs(env: Env, extra: dict[str, InputSpec]) -> Sections:
    """The inputs SaveAnimatedWEBP/PNG share; newer releases made them V3 nodes."""
    new = env.config.is_new_profile
    prefix = {"default": "ComfyUI", **({"multiline": False} if new else {})}
    required = {
        "images": ["IMAGE", {}] if new else ["IMAGE"],
        "filename_prefix": ["STRING", prefix],
        "fps": float_spec(6.0, 0.01, 1000.0, 0.01),
        **extra,
    }
    return {"required": required, "hidden": dict(V3_HIDDEN if new else CLASSIC_HIDDEN)}


def _webp_inputs(env: Env) -> Sections:
    methods = list(media.WEBP_METHODS)
    method = v3_combo(methods) if env.config.is_new_profile else combo_spec(methods)
    quality = ["INT", {"default": 80, "min": 0, "max": 100}]
    extra = {"lossless": ["BOOLEAN", {"default": True}], "quality": quality, "method": method}
    return _image_saver_inputs(env, extra)


def _apng_inputs(env: Env) -> Sections:
    level = {"default": 4, "min": 0, "max": 9}
    level = {"advanced": True, **level} if env.config.is_new_profile else level
    return _image_saver_inputs(env, {"compress_level": ["INT", level]})


def _preview_any_node(new: bool) -> NodeDef:
    return NodeDef(
        "PreviewAny", "Preview as Text" if new else "Preview Any",
        "utilities" if new else "utils", lambda env: {"required": {"source": ["*", {}]}},
        ("STRING",) if new else (), _preview_any, output_node=True,
        description="Preview any input value as text." if new else "",
        python_module="comfy_extras.nodes_preview_any",
        search_aliases=("show output", "inspect", "debug", "print value", "show text"),
    )  # fmt: skip


def _image_saver(name: str, new: bool, inputs: InputsFn, run: RunFn) -> NodeDef:
    # Newer releases made these V3 nodes that pass their images on, under a new category.
    return NodeDef(
        name, f"Save Animated {name[12:]}" if new else None,
        "image" if new else "image/animation", inputs, ("IMAGE",) if new else (), run,
        output_names=("images",) if new else (), output_node=True, python_module=_IMAGES, v3=new,
    )  # fmt: skip


def animation_nodes(new: bool) -> tuple[NodeDef, ...]:
    return (
        _image_saver("SaveAnimatedWEBP", new, _webp_inputs, _save_webp),
        _image_saver("SaveAnimatedPNG", new, _apng_inputs, _save_apng),
        _preview_any_node(new),
    )
