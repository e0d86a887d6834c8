"""Audio node types that need no model, per profile: EmptyAudio, LoadAudio, savers, previews."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from . import media
from .files import file_sha256, next_save_path
from .nodes import (
    CLASSIC_HIDDEN,
    V3_HIDDEN,
    Audio,
    Env,
    InputSpec,
    JsonDict,
    NodeContext,
    NodeDef,
    NodeResult,
    RunFn,
    Sections,
    combo_spec,
    v3_combo,
)
from .nodes_media import metadata_texts

_MODULE = "comfy_extras.nodes_audio"
_QUALITIES = {
    "mp3": (["V0", "128k", "320k"], "V0"),
    "opus": (["64k", "96k", "128k", "192k", "320k"], "128k"),
}


def _file_name(ctx: NodeContext, stem: str, counter: int, ext: str) -> str:
    # Newer releases dropped the trailing underscore audio files had ("x_00001_.flac").
    return f"{stem}_{counter:05}{'' if ctx.env.config.is_new_profile else '_'}.{ext}"


async def _write_audio(
    ctx: NodeContext, audio: Audio, prefix: str, dir_type: str, file_format: str, quality: str
) -> NodeResult:
    base = ctx.env.dirs.by_type(dir_type)
    folder, stem, subfolder, counter = next_save_path(base, prefix, 0, 0)
    texts = metadata_texts(ctx)
    results = []
    for batch_number, clip in enumerate(audio.clips):
        name = _file_name(ctx, stem.replace("%batch_num%", str(batch_number)), counter, file_format)
        await asyncio.to_thread(
            media.save_audio_clip, audio, clip, folder / name, file_format, quality, texts
        )
        results.append({"filename": name, "subfolder": subfolder, "type": dir_type})
        counter += 1
    return NodeResult((audio,), {"audio": results})  # newer releases pass the audio on


async def _save_flac(ctx: NodeContext, a: JsonDict) -> NodeResult:
    return await _write_audio(ctx, a["audio"], str(a["filename_prefix"]), "output", "flac", "")


async def _save_mp3(ctx: NodeContext, a: JsonDict) -> NodeResult:
    prefix, quality = str(a["filename_prefix"]), str(a["quality"])
    return await _write_audio(ctx, a["audio"], prefix, "output", "mp3", quality)


async def _save_opus(ctx: NodeContext, a: JsonDict) -> NodeResult:
    prefix, quality = str(a["filename_prefix"]), str(a["quality"])
    return await _write_audio(ctx, a["audio"], prefix, "output", "opus", quality)


async def _preview(ctx: NodeContext, a: JsonDict) -> NodeResult:
    # PreviewAudio is SaveAudio into temp/ with the default prefix and a random suffix.
    suffix = "".join(random.choice("abcdefghijklmnopqrstupvxyz") for _ in range(5))
    return await _write_audio(ctx, a["audio"], f"ComfyUI_temp_{suffix}", "temp", "flac", "")


async def _empty(ctx: NodeContext, a: JsonDict) -> NodeResult:
    audio = media.silence(float(a["duration"]), int(a["sample_rate"]), int(a["channels"]))
    return NodeResult((audio,))


def _audio_path(env: Env, name: str) -> Path:
    return env.dirs.annotated_path(name)


async def _load(ctx: NodeContext, a: JsonDict) -> NodeResult:
    return NodeResult(
        (await asyncio.to_thread(media.load_audio, _audio_path(ctx.env, a["audio"])),)
    )


def _validate(env: Env, a: JsonDict) -> bool | str:
    return (
        True if _audio_path(env, str(a["audio"])).exists() else f"Invalid audio file: {a['audio']}"
    )


def _changed(env: Env, a: JsonDict) -> str:
    path = _audio_path(env, str(a["audio"]))
    return file_sha256(path) if path.is_file() else ""


def _combo(env: Env, options: list[str], **extra: object) -> InputSpec:
    return v3_combo(options, **extra) if env.config.is_new_profile else combo_spec(options, **extra)


def _audio_only(env: Env) -> Sections:
    new = env.config.is_new_profile
    audio = ["AUDIO", {}] if new else ["AUDIO"]
    return {"required": {"audio": audio}, "hidden": dict(V3_HIDDEN if new else CLASSIC_HIDDEN)}


def _save_inputs(env: Env, file_format: str) -> Sections:
    sections = _audio_only(env)
    prefix = {
        "default": "audio/ComfyUI",
        **({"multiline": False} if env.config.is_new_profile else {}),
    }
    sections["required"]["filename_prefix"] = ["STRING", prefix]
    if file_format in _QUALITIES:
        options, default = _QUALITIES[file_format]
        sections["required"]["quality"] = _combo(env, options, default=default)
    return sections


_EMPTY_TIPS = {
    "duration": "Duration of the empty audio clip in seconds",
    "sample_rate": "Sample rate of the empty audio clip.",
    "channels": "Number of audio channels (1 for mono, 2 for stereo).",
}


def _empty_inputs(env: Env) -> Sections:
    duration = {"default": 60.0, "min": 0.0, "max": 0xFFFFFFFFFFFFFFFF, "step": 0.01}
    if not env.config.is_new_profile:
        return {
            "required": {
                "duration": ["FLOAT", {**duration, "tooltip": _EMPTY_TIPS["duration"]}],
                "sample_rate": ["INT", {"default": 44100, "tooltip": _EMPTY_TIPS["sample_rate"]}],
                "channels": ["INT", {"default": 2, "min": 1, "max": 2,
                                     "tooltip": _EMPTY_TIPS["channels"]}],
            }
        }  # fmt: skip
    # V3: the tooltip first; the two rarely changed inputs are "advanced"; the rate is bounded.
    return {
        "required": {
            "duration": ["FLOAT", {"tooltip": _EMPTY_TIPS["duration"], **duration}],
            "sample_rate": ["INT", {"tooltip": _EMPTY_TIPS["sample_rate"], "advanced": True,
                                    "default": 44100, "min": 1, "max": 192000}],
            "channels": ["INT", {"tooltip": _EMPTY_TIPS["channels"], "advanced": True,
                                 "default": 2, "min": 1, "max": 2}],
        }
    }  # fmt: skip


def _load_inputs(env: Env) -> Sections:
    return {
        "required": {
            "audio": _combo(env, env.dirs.input_files_of("audio", "video"), audio_upload=True)
        }
    }


def _saver(name: str, new: bool, file_format: str, run: RunFn, aliases: tuple[str, ...]) -> NodeDef:
    label = {"flac": "FLAC", "mp3": "MP3", "opus": "Opus"}[file_format]
    return NodeDef(
        name, f"Save Audio ({label})" + (" (DEPRECATED)" if new else ""), "audio",
        lambda env: _save_inputs(env, file_format), ("AUDIO",) if new else (), run,
        output_names=("audio",) if new else (), output_node=True, python_module=_MODULE,
        v3=new, extra_info={"deprecated": True} if new else {}, search_aliases=aliases,
        essentials_category=None if file_format == "opus" else "Audio",
    )  # fmt: skip


def audio_nodes(new: bool) -> tuple[NodeDef, ...]:
    # Newer releases made these V3 nodes; the savers pass their audio on and are deprecated.
    return (
        _saver("SaveAudio", new, "flac", _save_flac, ("export flac",)),
        _saver("SaveAudioMP3", new, "mp3", _save_mp3, ("export mp3",)),
        _saver("SaveAudioOpus", new, "opus", _save_opus, ("export opus",)),
        NodeDef(
            "PreviewAudio", "Preview Audio", "audio", _audio_only, ("AUDIO",) if new else (),
            _preview, output_names=("audio",) if new else (), output_node=True,
            python_module=_MODULE, v3=new, search_aliases=("play audio",),
            description="Preview the audio without saving it to the ComfyUI output directory."
            if new else "",
        ),
        NodeDef(
            "LoadAudio", "Load Audio", "audio", _load_inputs, ("AUDIO",), _load,
            python_module=_MODULE, v3=new, validate_args=("audio",), validate=_validate,
            is_changed=_changed, search_aliases=("import audio", "open audio", "audio file"),
            essentials_category="Audio",
        ),
        NodeDef(
            "EmptyAudio", "Empty Audio", "audio", _empty_inputs, ("AUDIO",), _empty,
            python_module=_MODULE, v3=new, search_aliases=("blank audio",),
        ),
    )  # fmt: skip
