"""What an output file is: its kind, content type, size and duration, probed from its bytes."""

from __future__ import annotations

import io
from fractions import Fraction

import av
import pytest
from PIL import Image

from formy_async import media


@pytest.mark.parametrize(
    ("name", "hint", "kind", "content_type"),
    [
        ("1_1.png", "", "image", "image/png"),
        ("1_1.webp", "", "image", "image/webp"),
        ("1_1.mp4", "", "video", "video/mp4"),
        ("1_1.webm", "", "video", "video/webm"),
        ("1_1.flac", "", "audio", "audio/flac"),
        ("1_1.mp3", "", "audio", "audio/mpeg"),
        ("1_1.opus", "", "audio", "audio/ogg"),
        ("1_1.glb", "", "3d", "model/gltf-binary"),
        ("1_1.txt", "", "text", "text/plain"),
        ("1_1.latent", "", "file", "application/octet-stream"),
        ("clip_00001", "video/h264-mp4", "video", "application/octet-stream"),
    ],
)
def test_a_file_has_a_kind_and_a_content_type_by_its_name(
    name: str, hint: str, kind: str, content_type: str
) -> None:
    assert media.kind_of(name, hint) == kind
    assert media.content_type_of(name) == content_type


def animated_webp(frames: int, ms: int) -> bytes:
    out = io.BytesIO()
    images = [Image.new("RGB", (32, 24), (i * 40, 0, 0)) for i in range(frames)]
    images[0].save(out, format="WEBP", save_all=True, append_images=images[1:], duration=ms)
    return out.getvalue()


def mp4(frames: int, fps: int) -> bytes:
    out = io.BytesIO()
    with av.open(out, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(frames):
            frame = av.VideoFrame.from_image(Image.new("RGB", (64, 48), (i * 20, 0, 0)))
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()


async def test_an_animated_image_has_its_size_and_duration() -> None:
    info = await media.probe(animated_webp(frames=4, ms=250), "image")
    assert (info.width, info.height, info.animated) == (32, 24, True)
    assert info.duration == pytest.approx(1.0)


async def test_a_still_image_is_probed_on_the_loop_without_a_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_thread(*args: object) -> None:
        raise AssertionError("a header needs no thread")

    monkeypatch.setattr(media.asyncio, "to_thread", no_thread)
    picture = io.BytesIO()
    Image.new("RGB", (40, 30)).save(picture, "PNG")
    info = await media.probe(picture.getvalue(), "image")
    assert (info.width, info.height, info.duration, info.animated) == (40, 30, None, False)


async def test_a_video_has_its_size_and_duration() -> None:
    info = await media.probe(mp4(frames=12, fps=12), "video")
    assert (info.width, info.height) == (64, 48)
    assert info.duration == pytest.approx(1.0, abs=0.1)


async def test_bytes_that_are_not_media_probe_to_nothing() -> None:
    assert await media.probe(b"not a video", "video") == media.MediaInfo()
    assert await media.probe(b"not an image", "image") == media.MediaInfo()
