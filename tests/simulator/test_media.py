"""Media save nodes in both profiles: real animated images, video and audio files behind /view."""

from __future__ import annotations

import io
import json
import mimetypes
from typing import Any

import aiohttp
import av
import pytest
from PIL import Image

from .support import (
    PROFILES,
    Graph,
    distinct_images,
    empty_images,
    fetch,
    get_json,
    history_of,
    post_prompt,
    run_to_history,
    simulator,
    submit,
)

pytestmark = pytest.mark.parametrize("version", PROFILES)


def video_graph(frames: int = 4, audio: bool = False, format_name: str = "auto") -> Graph:
    create: dict[str, Any] = {"images": ["1", 0], "fps": 8}
    graph: Graph = {
        "1": empty_images(batch=frames),
        "2": {"class_type": "CreateVideo", "inputs": create},
        "3": {
            "class_type": "SaveVideo",
            "inputs": {"video": ["2", 0], "filename_prefix": "video/clip", "format": format_name,
                       "codec": "auto"},
        },
    }  # fmt: skip
    if audio:
        graph["4"] = silence(0.5)
        create["audio"] = ["4", 0]
    return graph


def silence(duration: float, channels: int = 2) -> Graph:
    inputs = {"duration": duration, "sample_rate": 44100, "channels": channels}
    return {"class_type": "EmptyAudio", "inputs": inputs}


def images_into(node: str, frames: int = 3, **inputs: Any) -> Graph:
    """`frames` different pictures into `node` (id "7")."""
    graph = distinct_images(frames)
    graph["7"] = {"class_type": node, "inputs": {"images": ["6", 0], **inputs}}
    return graph


def combo_options(spec: list[Any]) -> list[str]:
    """A combo's choices in either shape: [[choices], {...}] (V1) or ["COMBO", {"options"}] (V3)."""
    options: list[str] = spec[0] if isinstance(spec[0], list) else spec[1]["options"]
    return options


def probe(data: bytes) -> tuple[str, int, int, list[str]]:
    """(container format, video frames, audio streams, codecs) of an encoded file."""
    with av.open(io.BytesIO(data)) as container:
        codecs = [stream.codec_context.name for stream in container.streams]
        frames = sum(1 for _ in container.decode(video=0)) if container.streams.video else 0
        return container.format.name, frames, len(container.streams.audio), codecs


async def only_file(http: aiohttp.ClientSession, url: str, entry: Any, key: str) -> bytes:
    """The one file an output node reported under `key`, checked against /view's Content-Type."""
    (output,) = entry["outputs"].values()
    (item,) = output[key]
    data, content_type = await fetch(http, url, item)
    assert content_type == mimetypes.guess_type(item["filename"])[0]
    return data


async def test_video_workflow_saves_an_mp4_with_every_frame(
    version: str, http: aiohttp.ClientSession
) -> None:
    async with simulator(version) as url:
        entry = await run_to_history(http, url, video_graph(frames=4))
        data = await only_file(http, url, entry, "images")
    output = entry["outputs"]["3"]
    assert output["animated"] == [True]
    assert output["images"][0] == {"filename": "clip_00001_.mp4", "subfolder": "video",
                                   "type": "output"}  # fmt: skip
    container_format, frames, audio_streams, codecs = probe(data)
    assert "mp4" in container_format.split(",")
    assert (frames, audio_streams, codecs) == (4, 0, ["h264"])


async def test_video_carries_the_prompt_as_metadata(
    version: str, http: aiohttp.ClientSession
) -> None:
    async with simulator(version) as url:
        entry = await run_to_history(http, url, video_graph())
        data = await only_file(http, url, entry, "images")
    with av.open(io.BytesIO(data)) as container:
        assert json.loads(container.metadata["prompt"])["2"]["class_type"] == "CreateVideo"


async def test_video_with_audio_gets_an_aac_track(
    version: str, http: aiohttp.ClientSession
) -> None:
    async with simulator(version) as url:
        entry = await run_to_history(http, url, video_graph(audio=True))
        data = await only_file(http, url, entry, "images")
    _, frames, audio_streams, codecs = probe(data)
    assert (frames, audio_streams, codecs) == (4, 1, ["h264", "aac"])


async def test_animated_webp_has_one_frame_per_image(
    version: str, http: aiohttp.ClientSession
) -> None:
    graph = images_into("SaveAnimatedWEBP", 3, filename_prefix="anim", fps=6.0, lossless=True,
                        quality=80, method="fastest")  # fmt: skip
    async with simulator(version) as url:
        entry = await run_to_history(http, url, graph)
        data = await only_file(http, url, entry, "images")
    assert entry["outputs"]["7"]["animated"] == [True]
    with Image.open(io.BytesIO(data)) as picture:
        assert (picture.format, picture.n_frames, picture.size) == ("WEBP", 3, (64, 64))
        assert picture.getexif()[0x0110].startswith("prompt:")


async def test_animated_png_has_one_frame_per_image(
    version: str, http: aiohttp.ClientSession
) -> None:
    graph = images_into("SaveAnimatedPNG", 3, filename_prefix="apng", fps=6.0, compress_level=1)
    async with simulator(version) as url:
        entry = await run_to_history(http, url, graph)
        data = await only_file(http, url, entry, "images")
    assert entry["outputs"]["7"]["animated"] == [True]
    with Image.open(io.BytesIO(data)) as picture:
        assert (picture.format, picture.n_frames) == ("PNG", 3)
    assert b"comfprompt\x00" in data  # the prompt rides in a private chunk after the frames


async def test_save_webm_writes_a_vp9_webm(version: str, http: aiohttp.ClientSession) -> None:
    graph = images_into("SaveWEBM", 4, filename_prefix="web", codec="vp9", fps=24.0, crf=32.0)
    async with simulator(version) as url:
        entry = await run_to_history(http, url, graph)
        data = await only_file(http, url, entry, "images")
    assert entry["outputs"]["7"]["images"][0]["filename"] == "web_00001_.webm"
    assert entry["outputs"]["7"]["animated"] == [True]
    container_format, frames, _, codecs = probe(data)
    assert ("webm" in container_format, frames, codecs) == (True, 4, ["vp9"])


@pytest.mark.parametrize(
    ("node", "extra", "suffix", "rate"),
    [("SaveAudio", {}, ".flac", 44100),
     ("SaveAudioMP3", {"quality": "V0"}, ".mp3", 44100),
     ("SaveAudioMP3", {"quality": "128k"}, ".mp3", 44100),
     ("SaveAudioOpus", {"quality": "64k"}, ".opus", 48000)],
)  # fmt: skip
async def test_saved_audio_decodes(
    version: str, node: str, extra: dict[str, str], suffix: str, rate: int,
    http: aiohttp.ClientSession,
) -> None:  # fmt: skip
    graph = {"1": silence(0.5), "2": {"class_type": node,
             "inputs": {"audio": ["1", 0], "filename_prefix": "audio/sound", **extra}}}  # fmt: skip
    async with simulator(version) as url:
        entry = await run_to_history(http, url, graph)
        data = await only_file(http, url, entry, "audio")
    (item,) = entry["outputs"]["2"]["audio"]
    assert item["filename"].startswith("sound_00001") and item["filename"].endswith(suffix)
    assert item["subfolder"] == "audio"
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        assert (stream.codec_context.sample_rate, stream.channels) == (rate, 2)
    assert abs(samples - rate // 2) < rate // 10


async def test_preview_audio_writes_flac_to_temp(version: str, http: aiohttp.ClientSession) -> None:
    graph = {"1": silence(0.1, channels=1),
             "2": {"class_type": "PreviewAudio", "inputs": {"audio": ["1", 0]}}}  # fmt: skip
    async with simulator(version) as url:
        entry = await run_to_history(http, url, graph)
        await only_file(http, url, entry, "audio")
    (item,) = entry["outputs"]["2"]["audio"]
    assert item["type"] == "temp"
    assert item["filename"].startswith("ComfyUI_temp_") and item["filename"].endswith(".flac")


def flac_bytes(seconds: float = 0.25, rate: int = 22050) -> bytes:
    buffer = io.BytesIO()
    samples = int(seconds * rate)
    with av.open(buffer, mode="w", format="flac") as container:
        stream = container.add_stream("flac", rate=rate, layout="mono")
        frame = av.AudioFrame(format="s16", layout="mono", samples=samples)
        frame.planes[0].update(bytes(2 * samples))
        frame.sample_rate, frame.pts = rate, 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return buffer.getvalue()


async def upload(http: aiohttp.ClientSession, url: str, name: str, data: bytes) -> None:
    form = aiohttp.FormData()
    form.add_field("image", data, filename=name)
    async with http.post(f"{url}/upload/image", data=form) as response:
        assert response.status == 200


async def test_load_audio_reads_an_uploaded_file(version: str, http: aiohttp.ClientSession) -> None:
    graph = {"1": {"class_type": "LoadAudio", "inputs": {"audio": "voice.flac"}},
             "2": {"class_type": "SaveAudio",
                   "inputs": {"audio": ["1", 0], "filename_prefix": "copy"}}}  # fmt: skip
    async with simulator(version) as url:
        await upload(http, url, "voice.flac", flac_bytes())
        _, info = await get_json(http, f"{url}/object_info/LoadAudio")
        entry = await run_to_history(http, url, graph)
        data = await only_file(http, url, entry, "audio")
    assert combo_options(info["LoadAudio"]["input"]["required"]["audio"]) == ["voice.flac"]
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        assert (stream.codec_context.sample_rate, stream.channels) == (22050, 1)


async def test_load_audio_of_a_missing_file_fails_validation(
    version: str, http: aiohttp.ClientSession
) -> None:
    graph = {"1": {"class_type": "LoadAudio", "inputs": {"audio": "gone.flac"}},
             "2": {"class_type": "SaveAudio",
                   "inputs": {"audio": ["1", 0], "filename_prefix": "x"}}}  # fmt: skip
    async with simulator(version) as url:
        _, body = await post_prompt(http, url, graph)
    (error,) = body["node_errors"]["1"]["errors"]
    assert (error["type"], error["details"]) == (
        "custom_validation_failed",
        "audio - Invalid audio file: gone.flac",
    )


async def test_video_components_give_back_frames_and_fps(
    version: str, http: aiohttp.ClientSession
) -> None:
    graph = video_graph(frames=3)
    del graph["3"]
    graph["5"] = {"class_type": "GetVideoComponents", "inputs": {"video": ["2", 0]}}
    graph["6"] = {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "f"}}
    graph["7"] = {"class_type": "PreviewAny", "inputs": {"source": ["5", 2]}}
    async with simulator(version) as url:
        entry = await run_to_history(http, url, graph)
    assert len(entry["outputs"]["6"]["images"]) == 3
    assert entry["outputs"]["7"] == {"text": ["8.0"]}


async def test_load_video_reads_an_uploaded_mp4(version: str, http: aiohttp.ClientSession) -> None:
    graph = {
        "1": {"class_type": "LoadVideo", "inputs": {"file": "clip.mp4"}},
        "2": {"class_type": "GetVideoComponents", "inputs": {"video": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "back"}},
        "4": {"class_type": "PreviewAny", "inputs": {"source": ["2", 2]}},
    }
    async with simulator(version) as url:
        first = await run_to_history(http, url, video_graph(frames=5))
        mp4, _ = await fetch(http, url, first["outputs"]["3"]["images"][0])
        await upload(http, url, "clip.mp4", mp4)
        entry = await run_to_history(http, url, graph)
        frame, _ = await fetch(http, url, entry["outputs"]["3"]["images"][0])
    assert len(entry["outputs"]["3"]["images"]) == 5
    assert entry["outputs"]["4"] == {"text": ["8.0"]}
    with Image.open(io.BytesIO(frame)) as picture:
        assert picture.size == (64, 64)


async def test_preview_any_shows_a_constant_as_text(
    version: str, http: aiohttp.ClientSession
) -> None:
    graph = {"1": {"class_type": "PreviewAny", "inputs": {"source": "hello"}}}
    async with simulator(version) as url:
        entry = await run_to_history(http, url, graph)
    assert entry["outputs"]["1"] == {"text": ["hello"]}


async def test_resubmitted_video_is_cached_with_the_same_file(
    version: str, http: aiohttp.ClientSession
) -> None:
    async with simulator(version) as url:
        first = await run_to_history(http, url, video_graph())
        second = await history_of(http, url, await submit(http, url, video_graph()))
    assert second["outputs"] == first["outputs"]
    cached = next(m for m in second["status"]["messages"] if m[0] == "execution_cached")
    assert cached[1]["nodes"] == ["1", "2", "3"]
