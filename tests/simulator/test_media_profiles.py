"""Media nodes where the profiles differ: /object_info specs, file names, outputs, containers."""

from __future__ import annotations

import io
from typing import Any

import aiohttp
import av
import pytest

from .support import (
    NEW,
    OLD,
    Graph,
    empty_images,
    fetch,
    get_json,
    history_of,
    post_prompt,
    run_to_history,
    simulator,
)


async def object_info(http: aiohttp.ClientSession, version: str) -> Any:
    async with simulator(version) as url:
        return (await get_json(http, f"{url}/object_info"))[1]


def save_video(**inputs: Any) -> Graph:
    """EmptyImage(4) -> CreateVideo -> SaveVideo with these inputs (format, codec, ...)."""
    return {
        "1": empty_images(batch=4),
        "2": {"class_type": "CreateVideo", "inputs": {"images": ["1", 0], "fps": 8}},
        "3": {"class_type": "SaveVideo",
              "inputs": {"video": ["2", 0], "filename_prefix": "video/v", **inputs}},
    }  # fmt: skip


def codecs_of(data: bytes) -> tuple[str, list[str]]:
    with av.open(io.BytesIO(data)) as container:
        return container.format.name, [s.codec_context.name for s in container.streams]


async def test_old_save_video_has_flat_format_and_codec_combos(
    http: aiohttp.ClientSession,
) -> None:
    info = (await object_info(http, OLD))["SaveVideo"]
    required = info["input"]["required"]
    assert required["format"] == [
        "COMBO",
        {"tooltip": "The format to save the video as.", "default": "auto", "multiselect": False,
         "options": ["auto", "mp4"]},
    ]  # fmt: skip
    assert required["codec"][1]["options"] == ["auto", "h264"]
    assert (info["category"], info["output"]) == ("image/video", [])
    assert "is_input_list" not in info


async def test_new_save_video_nests_codec_in_a_dynamic_format_combo(
    http: aiohttp.ClientSession,
) -> None:
    info = (await object_info(http, NEW))["SaveVideo"]
    kind, spec = info["input"]["required"]["format"]
    assert kind == "COMFY_DYNAMICCOMBO_V3"
    containers = {option["key"]: option["inputs"] for option in spec["options"]}
    assert list(containers) == ["auto", "mp4", "mkv", "webm"]
    codecs = containers["webm"]["required"]["codec"][1]["options"]
    assert [option["key"] for option in codecs] == ["auto", "av1"]
    assert info["input"]["optional"]["codec"][1]["hidden"] is True  # the legacy flat input
    assert (info["output"], info["output_name"]) == (["VIDEO"], ["video"])
    assert (info["category"], info["essentials_category"]) == ("video", "Basics")


async def test_old_classic_media_nodes_keep_v1_specs(http: aiohttp.ClientSession) -> None:
    info = await object_info(http, OLD)
    webp = info["SaveAnimatedWEBP"]
    assert webp["input"]["required"]["method"] == [["default", "fastest", "slowest"]]
    assert webp["input"]["hidden"] == {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}
    assert (webp["display_name"], webp["output"]) == ("SaveAnimatedWEBP", [])
    assert info["SaveAudio"]["display_name"] == "Save Audio (FLAC)"
    assert info["SaveAudioMP3"]["input"]["required"]["quality"] == [
        ["V0", "128k", "320k"],
        {"default": "V0"},
    ]
    assert info["PreviewAny"]["output"] == []
    assert (info["SaveWEBM"]["display_name"], info["SaveWEBM"]["experimental"]) == (None, True)


async def test_new_media_nodes_are_v3_and_pass_their_input_on(
    http: aiohttp.ClientSession,
) -> None:
    info = await object_info(http, NEW)
    webp = info["SaveAnimatedWEBP"]
    assert webp["input"]["required"]["method"] == [
        "COMBO",
        {"multiselect": False, "options": ["default", "fastest", "slowest"]},
    ]
    assert webp["input"]["hidden"] == {"prompt": ["PROMPT"], "extra_pnginfo": ["EXTRA_PNGINFO"]}
    assert (webp["display_name"], webp["output"]) == ("Save Animated WEBP", ["IMAGE"])
    audio = info["SaveAudio"]
    assert (audio["display_name"], audio["deprecated"]) == ("Save Audio (FLAC) (DEPRECATED)", True)
    assert info["SaveAudioMP3"]["output"] == ["AUDIO"]
    assert (info["PreviewAny"]["display_name"], info["PreviewAny"]["output"]) == (
        "Preview as Text",
        ["STRING"],
    )
    assert info["GetVideoComponents"]["output_name"][3:] == ["bit_depth", "color_space"]
    assert "bit_depth" in info["CreateVideo"]["input"]["optional"]


@pytest.mark.parametrize(("version", "name"), [(OLD, "a_00001_.flac"), (NEW, "a_00001.flac")])
async def test_audio_file_name_has_a_trailing_underscore_only_in_old(
    version: str, name: str, http: aiohttp.ClientSession
) -> None:
    silence = {"duration": 0.1, "sample_rate": 8000, "channels": 1}
    graph = {"1": {"class_type": "EmptyAudio", "inputs": silence},
             "2": {"class_type": "SaveAudio",
                   "inputs": {"audio": ["1", 0], "filename_prefix": "a"}}}  # fmt: skip
    async with simulator(version) as url:
        entry = await run_to_history(http, url, graph)
    assert entry["outputs"]["2"]["audio"][0]["filename"] == name


def webp_into_save_image() -> Graph:
    webp = {"images": ["1", 0], "filename_prefix": "w", "fps": 6.0, "lossless": True,
            "quality": 80, "method": "fastest"}  # fmt: skip
    return {
        "1": empty_images(),
        "2": {"class_type": "SaveAnimatedWEBP", "inputs": webp},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "s"}},
    }


async def test_new_save_node_output_can_feed_another_node(http: aiohttp.ClientSession) -> None:
    async with simulator(NEW) as url:
        entry = await run_to_history(http, url, webp_into_save_image())
    assert set(entry["outputs"]) == {"2", "3"}


async def test_old_save_node_has_no_output_to_link(http: aiohttp.ClientSession) -> None:
    async with simulator(OLD) as url:
        status, body = await post_prompt(http, url, webp_into_save_image())
    # The WEBP output itself is valid, so the prompt is queued without the SaveImage.
    assert status == 200
    (error,) = body["node_errors"]["3"]["errors"]
    assert error["extra_info"]["exception_type"] == "IndexError"


@pytest.mark.parametrize(
    ("inputs", "suffix", "container", "codec"),
    [({"format": "auto", "codec": "auto"}, ".mp4", "mp4", "h264"),
     ({"format": "mp4", "format.codec": "h264"}, ".mp4", "mp4", "h264"),
     ({"format": "mkv", "format.codec": "auto"}, ".mkv", "matroska", "h264"),
     ({"format": "webm", "format.codec": "av1"}, ".webm", "webm", "libdav1d"),
     ({"format": "auto", "format.codec": "av1"}, ".webm", "webm", "libdav1d"),
     ({"format": "mp4"}, ".mp4", "mp4", "h264")],
)  # fmt: skip
async def test_new_save_video_picks_container_and_codec(
    inputs: dict[str, str], suffix: str, container: str, codec: str,
    http: aiohttp.ClientSession,
) -> None:  # fmt: skip
    async with simulator(NEW) as url:
        entry = await run_to_history(http, url, save_video(**inputs))
        (item,) = entry["outputs"]["3"]["images"]
        data, _ = await fetch(http, url, item)
    assert item["filename"] == f"v_00001_{suffix}"
    found_format, codecs = codecs_of(data)
    assert container in found_format.split(",")
    assert codecs[0] in (codec, "av1")  # the decoder's name or the codec's


async def test_new_save_video_reencodes_with_the_given_crf(http: aiohttp.ClientSession) -> None:
    crf = {"format.codec.encoding": "re-encode", "format.codec.encoding.crf": 40.0}
    graph = save_video(format="mp4", **{"format.codec": "h264", **crf})
    async with simulator(NEW) as url:
        entry = await run_to_history(http, url, graph)
        data, _ = await fetch(http, url, entry["outputs"]["3"]["images"][0])
    assert b"crf=40.0" in data  # x264 writes its settings into the stream


async def test_new_video_components_add_bit_depth_and_colour_space(
    http: aiohttp.ClientSession,
) -> None:
    graph = save_video(format="auto", codec="auto")
    graph["3"] = {"class_type": "GetVideoComponents", "inputs": {"video": ["2", 0]}}
    graph["4"] = {"class_type": "PreviewAny", "inputs": {"source": ["3", 3]}}
    graph["5"] = {"class_type": "PreviewAny", "inputs": {"source": ["3", 4]}}
    async with simulator(NEW) as url:
        entry = await run_to_history(http, url, graph)
    assert (entry["outputs"]["4"]["text"], entry["outputs"]["5"]["text"]) == (["8"], ["sRGB"])


def one_frame_into(node: str, **inputs: Any) -> Graph:
    return {
        "1": empty_images(),
        "2": {"class_type": node, "inputs": {"images": ["1", 0], "filename_prefix": "one",
                                             "fps": 6.0, **inputs}},
    }  # fmt: skip


WEBP = {"lossless": True, "quality": 80, "method": "default"}


@pytest.mark.parametrize(
    ("version", "node", "inputs", "animated"),
    [(OLD, "SaveAnimatedWEBP", WEBP, [False]),
     (OLD, "SaveAnimatedPNG", {"compress_level": 4}, [True]),
     (NEW, "SaveAnimatedWEBP", WEBP, None),
     (NEW, "SaveAnimatedPNG", {"compress_level": 4}, None)],
)  # fmt: skip
async def test_one_frame_animation_flag_per_profile(
    version: str, node: str, inputs: dict[str, Any], animated: list[bool] | None,
    http: aiohttp.ClientSession,
) -> None:  # fmt: skip
    async with simulator(version) as url:
        entry = await run_to_history(http, url, one_frame_into(node, **inputs))
    assert entry["outputs"]["2"].get("animated") == animated  # None: the key is left out


async def test_new_save_video_turns_h264_in_webm_into_av1(http: aiohttp.ClientSession) -> None:
    async with simulator(NEW) as url:
        entry = await run_to_history(
            http, url, save_video(format="webm", **{"format.codec": "h264"})
        )
        data, _ = await fetch(http, url, entry["outputs"]["3"]["images"][0])
    assert codecs_of(data)[1][0] in ("av1", "libdav1d")


@pytest.mark.parametrize("inputs", [{"format": "mov"}, {}])
async def test_new_save_video_without_a_known_format_fails_when_it_runs(
    inputs: dict[str, str], http: aiohttp.ClientSession
) -> None:
    async with simulator(NEW) as url:
        status, body = await post_prompt(http, url, save_video(**inputs))
        entry = await history_of(http, url, body["prompt_id"])
    event, data = entry["status"]["messages"][-1]
    assert (status, event, data["exception_type"]) == (200, "execution_error", "TypeError")
    assert "missing 1 required positional argument: 'format'" in data["exception_message"]


async def test_old_save_video_needs_format_and_flat_codec(http: aiohttp.ClientSession) -> None:
    async with simulator(OLD) as url:
        status, body = await post_prompt(http, url, save_video(**{"format.codec": "h264"}))
    assert status == 400
    missing = sorted(error["details"] for error in body["node_errors"]["3"]["errors"])
    assert missing == ["codec", "format"]
