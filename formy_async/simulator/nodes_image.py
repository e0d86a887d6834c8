"""Image node types: load/save/preview, Pillow operations, SlowProgress and FailOnPurpose."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

from . import pictures
from .files import file_sha256, next_save_path
from .nodes import (
    Env,
    Images,
    JsonDict,
    NodeContext,
    NodeDef,
    NodeResult,
    Sections,
    combo_spec,
    float_spec,
    int_spec,
)

MAX_RESOLUTION = 16384
TEST_MODULE = "custom_nodes.formy_test_nodes"


async def _write_images(
    ctx: NodeContext, images: Images, prefix: str, dir_type: str, compress_level: int
) -> NodeResult:
    base = ctx.env.dirs.by_type(dir_type)
    width, height = images[0].size if images else (0, 0)
    folder, stem, subfolder, counter = next_save_path(base, prefix, width, height)
    text = {"prompt": json.dumps(ctx.prompt)}
    for key, value in (ctx.extra_pnginfo or {}).items():
        text[key] = json.dumps(value)
    results = []
    for batch_number, image in enumerate(images):
        name = f"{stem.replace('%batch_num%', str(batch_number))}_{counter:05}_.png"
        data = await asyncio.to_thread(pictures.png_bytes, image, text, compress_level)
        await asyncio.to_thread((folder / name).write_bytes, data)
        results.append({"filename": name, "subfolder": subfolder, "type": dir_type})
        counter += 1
    return NodeResult((), {"images": results})


async def _save(ctx: NodeContext, a: JsonDict) -> NodeResult:
    return await _write_images(ctx, a["images"], str(a["filename_prefix"]), "output", 4)


async def _preview(ctx: NodeContext, a: JsonDict) -> NodeResult:
    suffix = "".join(random.choice("abcdefghijklmnopqrstupvxyz") for _ in range(5))
    return await _write_images(ctx, a["images"], f"ComfyUI_temp_{suffix}", "temp", 1)


def _image_path(env: Env, name: str) -> Path:
    return env.dirs.annotated_path(name)


def _validate_image(env: Env, a: JsonDict) -> bool | str:
    if not _image_path(env, str(a["image"])).exists():
        return f"Invalid image file: {a['image']}"
    return True


def _image_changed(env: Env, a: JsonDict) -> str:
    path = _image_path(env, str(a["image"]))
    return file_sha256(path) if path.is_file() else ""


async def _load(ctx: NodeContext, a: JsonDict) -> NodeResult:
    path = str(_image_path(ctx.env, a["image"]))
    images, mask = await asyncio.to_thread(pictures.load_image, path)
    return NodeResult((images, mask))


async def _load_mask(ctx: NodeContext, a: JsonDict) -> NodeResult:
    path = str(_image_path(ctx.env, a["image"]))
    return NodeResult((await asyncio.to_thread(pictures.mask_from_channel, path, a["channel"]),))


async def _scale_by(ctx: NodeContext, a: JsonDict) -> NodeResult:
    images = await asyncio.to_thread(
        pictures.scale_by, a["image"], a["upscale_method"], float(a["scale_by"])
    )
    return NodeResult((images,))


async def _scale(ctx: NodeContext, a: JsonDict) -> NodeResult:
    images = await asyncio.to_thread(
        pictures.scale, a["image"], a["upscale_method"], a["width"], a["height"], a["crop"]
    )
    return NodeResult((images,))


async def _blur(ctx: NodeContext, a: JsonDict) -> NodeResult:
    images = await asyncio.to_thread(
        pictures.blur, a["image"], int(a["blur_radius"]), float(a["sigma"])
    )
    return NodeResult((images,))


async def _invert(ctx: NodeContext, a: JsonDict) -> NodeResult:
    return NodeResult((await asyncio.to_thread(pictures.invert, a["image"]),))


async def _empty(ctx: NodeContext, a: JsonDict) -> NodeResult:
    images = await asyncio.to_thread(
        pictures.empty_image, a["width"], a["height"], a["batch_size"], a["color"]
    )
    return NodeResult((images,))


async def _composite(ctx: NodeContext, a: JsonDict) -> NodeResult:
    images = await asyncio.to_thread(
        pictures.composite,
        a["destination"],
        a["source"],
        int(a["x"]),
        int(a["y"]),
        bool(a["resize_source"]),
        a.get("mask"),
    )
    return NodeResult((images,))


async def _repeat(ctx: NodeContext, a: JsonDict) -> NodeResult:
    images: Images = a["image"]  # the whole batch, `amount` times over, as torch's repeat does
    return NodeResult(([image for _ in range(a["amount"]) for image in images],))


async def _invert_mask(ctx: NodeContext, a: JsonDict) -> NodeResult:
    return NodeResult((await asyncio.to_thread(pictures.invert_mask, a["mask"]),))


async def _size(ctx: NodeContext, a: JsonDict) -> NodeResult:
    images: Images = a["image"]
    width, height = images[0].size
    ctx.progress_text(f"width: {width}, height: {height}\n batch size: {len(images)}")
    return NodeResult((width, height, len(images)))


async def _slow_progress(ctx: NodeContext, a: JsonDict) -> NodeResult:
    images: Images = a["image"]
    steps = int(a["steps"])
    preview = images[0] if images and ctx.env.config.previews else None
    for step in range(1, steps + 1):
        await asyncio.sleep(float(a["delay"]))
        await ctx.progress(step, steps, preview)
    return NodeResult((images,))


async def _fail(ctx: NodeContext, a: JsonDict) -> NodeResult:
    raise RuntimeError(str(a["message"]))


def _image_only(env: Env) -> Sections:
    return {"required": {"image": ["IMAGE"]}}


def _repeat_inputs(env: Env) -> Sections:
    return {"required": {"image": ["IMAGE"], "amount": int_spec(1, 1, 4096)}}


def _load_inputs(env: Env) -> Sections:
    return {"required": {"image": [env.dirs.input_files(), {"image_upload": True}]}}


def _mask_inputs(env: Env) -> Sections:
    channels = combo_spec(["alpha", "red", "green", "blue"])
    return {
        "required": {
            "image": [env.dirs.input_files(), {"image_upload": True}],
            "channel": channels,
        }
    }


def _save_inputs(env: Env) -> Sections:
    tip = "The prefix for the file to save. This may include formatting information."
    return {
        "required": {
            "images": ["IMAGE", {"tooltip": "The images to save."}],
            "filename_prefix": ["STRING", {"default": "ComfyUI", "tooltip": tip}],
        },
        "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
    }


def _preview_inputs(env: Env) -> Sections:
    return {
        "required": {"images": ["IMAGE"]},
        "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"},
    }


def _scale_by_inputs(env: Env) -> Sections:
    return {
        "required": {
            "image": ["IMAGE"],
            "upscale_method": combo_spec(pictures.UPSCALE_METHODS),
            "scale_by": float_spec(1.0, 0.01, 8.0, 0.01),
        }
    }


def _scale_inputs(env: Env) -> Sections:
    return {
        "required": {
            "image": ["IMAGE"],
            "upscale_method": combo_spec(pictures.UPSCALE_METHODS),
            "width": int_spec(512, 0, MAX_RESOLUTION),
            "height": int_spec(512, 0, MAX_RESOLUTION),
            "crop": combo_spec(["disabled", "center"]),
        }
    }


def _blur_inputs(env: Env) -> Sections:
    return {
        "required": {
            "image": ["IMAGE"],
            "blur_radius": int_spec(1, 1, 31),
            "sigma": float_spec(1.0, 0.1, 10.0, 0.1),
        }
    }


def _empty_inputs(env: Env) -> Sections:
    return {
        "required": {
            "width": int_spec(512, 1, MAX_RESOLUTION),
            "height": int_spec(512, 1, MAX_RESOLUTION),
            "batch_size": int_spec(1, 1, 4096),
            "color": int_spec(0, 0, 0xFFFFFF, display="color"),
        }
    }


def _composite_inputs(env: Env) -> Sections:
    return {
        "required": {
            "destination": ["IMAGE"],
            "source": ["IMAGE"],
            "x": int_spec(0, 0, MAX_RESOLUTION),
            "y": int_spec(0, 0, MAX_RESOLUTION),
            "resize_source": ["BOOLEAN", {"default": False}],
        },
        "optional": {"mask": ["MASK"]},
    }


def _slow_inputs(env: Env) -> Sections:
    return {
        "required": {
            "image": ["IMAGE"],
            "steps": int_spec(5, 1, 10000),
            "delay": float_spec(0.2, 0.0, 60.0, 0.01),
        }
    }


def _fail_inputs(env: Env) -> Sections:
    message = ["STRING", {"default": "boom from FailOnPurpose"}]
    return {"required": {"image": ["IMAGE"], "message": message}}


_PP = "comfy_extras.nodes_post_processing"
_EXTRA_IMAGES = "comfy_extras.nodes_images"

IMAGE_NODES: tuple[NodeDef, ...] = (
    NodeDef(
        "SaveImage", "Save Image", "image", _save_inputs, (), _save, output_node=True,
        description="Saves the input images to your ComfyUI output directory.",
    ),
    NodeDef(
        "PreviewImage", "Preview Image", "image", _preview_inputs, (), _preview,
        output_node=True, description="Saves the input images to your ComfyUI temp directory.",
    ),
    NodeDef(
        "LoadImage", "Load Image", "image", _load_inputs, ("IMAGE", "MASK"), _load,
        validate_args=("image",), validate=_validate_image, is_changed=_image_changed,
    ),
    NodeDef(
        "LoadImageMask", "Load Image (as Mask)", "mask", _mask_inputs, ("MASK",), _load_mask,
        validate_args=("image",), validate=_validate_image, is_changed=_image_changed,
    ),
    NodeDef(
        "ImageScaleBy", "Upscale Image By", "image/upscaling", _scale_by_inputs, ("IMAGE",),
        _scale_by,
    ),
    NodeDef(
        "ImageScale", "Upscale Image", "image/upscaling", _scale_inputs, ("IMAGE",), _scale,
    ),
    NodeDef(
        "ImageBlur", "Image Blur", "image/postprocessing", _blur_inputs, ("IMAGE",), _blur,
        python_module=_PP,
    ),
    NodeDef("ImageInvert", "Invert Image", "image", _image_only, ("IMAGE",), _invert),
    NodeDef("EmptyImage", "EmptyImage", "image", _empty_inputs, ("IMAGE",), _empty),
    NodeDef(
        "ImageCompositeMasked", "ImageCompositeMasked", "image", _composite_inputs, ("IMAGE",),
        _composite, python_module="comfy_extras.nodes_mask",
    ),
    NodeDef(
        "InvertMask", "InvertMask", "mask", lambda env: {"required": {"mask": ["MASK"]}},
        ("MASK",), _invert_mask, python_module="comfy_extras.nodes_mask",
    ),
    NodeDef(
        "RepeatImageBatch", "RepeatImageBatch", "image/batch", _repeat_inputs, ("IMAGE",),
        _repeat, python_module=_EXTRA_IMAGES,
    ),
    NodeDef(
        "GetImageSize", "Get Image Size", "image", _image_only, ("INT", "INT", "INT"), _size,
        output_names=("width", "height", "batch_size"), python_module=_EXTRA_IMAGES,
    ),
    NodeDef(
        "SlowProgress", "Slow Progress", "testing", _slow_inputs, ("IMAGE",), _slow_progress,
        python_module=TEST_MODULE,
    ),
    NodeDef(
        "FailOnPurpose", "Fail On Purpose", "testing", _fail_inputs, ("IMAGE",), _fail,
        python_module=TEST_MODULE,
    ),
)  # fmt: skip
