"""The newer SaveVideo's /object_info input spec: nested dynamic combos (container, codec, mode)."""

from __future__ import annotations

from .nodes import V3_HIDDEN, Env, InputSpec, JsonDict, Sections, v3_combo

DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"
_PREFIX_TIP = (
    "The prefix for the file to save. This may include formatting information such as "
    "%date:yyyy-MM-dd% or %Empty Latent Image.width% to include values from nodes."
)
_FORMAT_TIP = (
    "The output container. Auto preserves the source container when possible; MP4, MKV, and "
    "WebM select a specific container."
)
_CODEC_TIP = (
    "The output video codec. Auto preserves a compatible source stream. H.264 and AV1 "
    "re-encoding support SDR, HDR (HLG), and HDR PQ."
)
_COLOUR_TIP = (
    "Auto uses sRGB for videos created from images and preserves recognized colors on loaded "
    "videos. sRGB writes SDR BT.709/sRGB. HDR writes 10-bit BT.2020/HLG; HDR PQ writes "
    "BT.2020/PQ. Other input pixels must already use the selected color space."
)
# codec: (name in tooltips, default crf, max crf)
_REENCODING = {"h264": ("H.264", 23.0, 51.0), "av1": ("AV1", 30.0, 63.0)}


def dynamic_combo(options: dict[str, Sections], **extra: object) -> InputSpec:
    """A DynamicCombo as NodeInfoV1 shows it: each option names the inputs it reveals."""
    listed = [{"key": key, "inputs": inputs} for key, inputs in options.items()]
    return [DYNAMIC_COMBO, {**extra, "options": listed}]


def _encoding(codec: str) -> InputSpec:
    label, default_crf, max_crf = _REENCODING[codec]
    crf_tip = "Lower values produce higher quality and larger files."
    crf = {"tooltip": crf_tip, "default": default_crf, "min": 0.0, "max": max_crf, "step": 1.0}
    colour = v3_combo(["auto", "sRGB", "HDR", "HDR PQ"], tooltip=_COLOUR_TIP, default="auto")
    colour[1] = {"display_name": "color space", **colour[1]}
    reencode: Sections = {"required": {"crf": ["FLOAT", crf], "color_space": colour}}
    tip = (
        f"Automatic preserves compatible {label} streams. Re-encode applies custom encoding "
        "options."
    )
    return dynamic_combo(
        {"auto": {"required": {}}, "re-encode": reencode},
        display_name="encoding mode",
        tooltip=tip,
    )


def codec_input(codecs: list[str], hidden: bool = False) -> InputSpec:
    options: dict[str, Sections] = {}
    for codec in codecs:
        optional = {} if codec == "auto" else {"optional": {"encoding": _encoding(codec)}}
        options[codec] = {"required": {}, **optional}
    extra: JsonDict = {"tooltip": _CODEC_TIP, **({"hidden": True} if hidden else {})}
    return dynamic_combo(options, **extra)


def save_video_inputs(env: Env) -> Sections:
    every = ["auto", "h264", "av1"]
    containers = {"auto": every, "mp4": every, "mkv": every, "webm": ["auto", "av1"]}
    formats = {key: {"required": {"codec": codec_input(c)}} for key, c in containers.items()}
    prefix = {"tooltip": _PREFIX_TIP, "default": "video/ComfyUI", "multiline": False}
    return {
        "required": {
            "video": ["VIDEO", {"tooltip": "The video to save."}],
            "filename_prefix": ["STRING", prefix],
            "format": dynamic_combo(formats, tooltip=_FORMAT_TIP),
        },
        # The flat "codec" of older graphs, still accepted, hidden in the UI.
        "optional": {"codec": codec_input(every, hidden=True)},
        "hidden": dict(V3_HIDDEN),
    }
