"""Video node types, per profile: create, save (MP4/MKV/WebM), split and load videos."""

from __future__ import annotations

import asyncio
from fractions import Fraction
from pathlib import Path
from typing import Any

from . import media
from .files import file_sha256
from .nodes import (
    V3_HIDDEN,
    Env,
    Images,
    JsonDict,
    NodeContext,
    NodeDef,
    NodeResult,
    Sections,
    Video,
    float_spec,
    v3_combo,
)
from .nodes_media import metadata_texts, output_path, saved_item
from .specs_video import save_video_inputs

_MODULE = "comfy_extras.nodes_video"
_PREFIX_TIP = (
    "The prefix for the file to save. This may include formatting information such as "
    "%date:yyyy-MM-dd% or %Empty Latent Image.width% to include values from nodes."
)
_CRF_TIP = (
    "Higher crf means lower quality with a smaller file size, lower crf means higher quality "
    "higher filesize."
)
_CONTAINERS = ("auto", "mp4", "mkv", "webm")
_CODECS = ("auto", "h264", "av1")


def _video_ui(path: Path, subfolder: str) -> JsonDict:
    # Core video nodes report their file under "images" with animated true (there is no "video").
    return {"images": [saved_item(path, subfolder)], "animated": [True]}


async def _save_webm(ctx: NodeContext, a: JsonDict) -> NodeResult:
    images: Images = a["images"]
    path, subfolder = output_path(ctx, str(a["filename_prefix"]), images[0].size, "webm")
    await asyncio.to_thread(
        media.save_webm, images, path, str(a["codec"]), float(a["fps"]), float(a["crf"]),
        metadata_texts(ctx),
    )  # fmt: skip
    # Newer releases pass the images on; 0.3.64 declares no output, so nothing can link to it.
    return NodeResult((images,), _video_ui(path, subfolder))


async def _create_video(ctx: NodeContext, a: JsonDict) -> NodeResult:
    images: Images = a["images"]
    return NodeResult((Video(tuple(images), Fraction(float(a["fps"])), a.get("audio")),))


def _old_choice(a: JsonDict) -> tuple[str, str, float | None]:
    """0.3.64 writes H.264 in MP4 only; its combos are not validated, so it fails here."""
    if a["format"] not in ("auto", "mp4"):
        raise ValueError(f"{a['format']!r} is not a valid VideoContainer")
    if a["codec"] not in ("auto", "h264"):
        raise ValueError("Only H264 codec is supported for now")
    return "mp4", "h264", None


def _new_choice(a: JsonDict) -> tuple[str, str, float | None]:
    """Newer SaveVideo: `format` is a dynamic combo whose sub-inputs come dotted
    ("format.codec", "format.codec.encoding.crf"); a flat legacy "codec" still counts. A key
    the chosen option does not offer is dropped, as ComfyUI drops it (observed on 0.33)."""
    container = a.get("format")
    if container not in _CONTAINERS:
        # An unknown or absent container reaches the node as no argument at all.
        raise TypeError("SaveVideo.execute() missing 1 required positional argument: 'format'")
    offered = ("auto", "av1") if container == "webm" else _CODECS
    codec = next((c for c in (a.get("format.codec"), a.get("codec")) if c in offered), "auto")
    if container == "auto":
        container = "webm" if codec == "av1" else "mp4"
    if codec == "auto":
        codec = "av1" if container == "webm" else "h264"
    reencode = a.get("format.codec.encoding") == "re-encode"
    crf = a.get("format.codec.encoding.crf", 30.0 if codec == "av1" else 23.0)
    return str(container), str(codec), float(crf) if reencode else None


async def _save_video(ctx: NodeContext, a: JsonDict) -> NodeResult:
    video: Video = a["video"]
    new = ctx.env.config.is_new_profile
    container, codec, crf = _new_choice(a) if new else _old_choice(a)
    path, subfolder = output_path(ctx, str(a["filename_prefix"]), video.size, container)
    await asyncio.to_thread(media.save_video, video, path, codec, crf, metadata_texts(ctx))
    return NodeResult((video,), _video_ui(path, subfolder))


async def _video_components(ctx: NodeContext, a: JsonDict) -> NodeResult:
    video: Video = a["video"]
    # Newer releases add bit depth and colour space; an 8-bit sRGB video is all we make.
    return NodeResult((list(video.frames), video.audio, float(video.frame_rate), 8, "sRGB"))


def _video_path(env: Env, name: str) -> Path:
    return env.dirs.annotated_path(name)


async def _load_video(ctx: NodeContext, a: JsonDict) -> NodeResult:
    return NodeResult((await asyncio.to_thread(media.load_video, _video_path(ctx.env, a["file"])),))


def _validate_video(env: Env, a: JsonDict) -> bool | str:
    return True if _video_path(env, str(a["file"])).exists() else f"Invalid video file: {a['file']}"


def _video_changed(env: Env, a: JsonDict) -> str:
    # ComfyUI fingerprints by modification time; a content hash changes exactly as often here.
    path = _video_path(env, str(a["file"]))
    return file_sha256(path) if path.is_file() else ""


def _webm_inputs(env: Env) -> Sections:
    alpha_tip = "RGBA images are saved with their alpha channel as transparency (vp9 codec only)."
    crf = {"tooltip": _CRF_TIP, "default": 32.0, "min": 0, "max": 63.0, "step": 1}
    return {
        "required": {
            "images": ["IMAGE", {"tooltip": alpha_tip} if env.config.is_new_profile else {}],
            "filename_prefix": ["STRING", {"default": "ComfyUI", "multiline": False}],
            "codec": v3_combo(list(media.WEBM_ENCODERS)),
            "fps": float_spec(24.0, 0.01, 1000.0, 0.01),
            "crf": ["FLOAT", crf],
        },
        "hidden": dict(V3_HIDDEN),
    }


def _old_save_video_inputs(env: Env) -> Sections:
    prefix = {"tooltip": _PREFIX_TIP, "default": "video/ComfyUI", "multiline": False}
    format_tip, codec_tip = "The format to save the video as.", "The codec to use for the video."
    return {
        "required": {
            "video": ["VIDEO", {"tooltip": "The video to save."}],
            "filename_prefix": ["STRING", prefix],
            "format": v3_combo(["auto", "mp4"], tooltip=format_tip, default="auto"),
            "codec": v3_combo(["auto", "h264"], tooltip=codec_tip, default="auto"),
        },
        "hidden": dict(V3_HIDDEN),
    }


def _create_video_inputs(env: Env) -> Sections:
    optional: JsonDict = {"audio": ["AUDIO", {"tooltip": "The audio to add to the video."}]}
    if env.config.is_new_profile:
        tip = (
            "Bit depth of the created video. 10-bit keeps smoother gradients with less banding, "
            "but some players and downstream nodes may not support it."
        )
        depth = {"tooltip": tip, "default": 8, "min": 8, "max": 10, "step": 2, "display": "number"}
        optional["bit_depth"] = ["INT", depth]
    return {
        "required": {
            "images": ["IMAGE", {"tooltip": "The images to create a video from."}],
            "fps": float_spec(30.0, 1.0, 120.0, 1.0),
        },
        "optional": optional,
    }


def _load_video_inputs(env: Env) -> Sections:
    return {"required": {"file": v3_combo(env.dirs.input_files_of("video"), video_upload=True)}}


def _components_inputs(env: Env) -> Sections:
    return {"required": {"video": ["VIDEO", {"tooltip": "The video to extract components from."}]}}


def video_nodes(new: bool) -> tuple[NodeDef, ...]:
    category = "video" if new else "image/video"
    extra: dict[str, Any] = {"python_module": _MODULE, "v3": True}
    components = ("IMAGE", "AUDIO", "FLOAT", *(("INT", "COMBO") if new else ()))
    names = ("images", "audio", "fps", *(("bit_depth", "color_space") if new else ()))
    return (
        NodeDef(
            "SaveWEBM", "Save WEBM" if new else None, category, _webm_inputs,
            ("IMAGE",) if new else (), _save_webm, output_names=("images",) if new else (),
            output_node=True, extra_info={"experimental": True},
            search_aliases=("export webm",), **extra,
        ),
        NodeDef(
            "SaveVideo", "Save Video", category,
            save_video_inputs if new else _old_save_video_inputs,
            ("VIDEO",) if new else (), _save_video, output_names=("video",) if new else (),
            output_tooltips=("The input video, unchanged.",) if new else (), output_node=True,
            description=f"Saves the input {'videos' if new else 'images'} to your ComfyUI "
            "output directory.",
            search_aliases=("export video",), essentials_category="Basics", **extra,
        ),
        NodeDef(
            "CreateVideo", "Create Video", category, _create_video_inputs, ("VIDEO",),
            _create_video, description="Create a video from images.",
            search_aliases=("images to video",), essentials_category="Video Tools", **extra,
        ),
        NodeDef(
            "GetVideoComponents", "Get Video Components", category, _components_inputs,
            components, _video_components, output_names=names,
            description="Extracts video frames, audio, frame rate, bit depth, and color space."
            if new else "Extracts all components from a video: frames, audio, and framerate.",
            search_aliases=("extract frames", "split video", "video to images", "demux"), **extra,
        ),
        NodeDef(
            "LoadVideo", "Load Video", category, _load_video_inputs, ("VIDEO",), _load_video,
            validate_args=("file",), validate=_validate_video, is_changed=_video_changed,
            search_aliases=("import video", "open video", "video file"),
            essentials_category="Basics", **extra,
        ),
    )  # fmt: skip
