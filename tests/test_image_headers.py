"""An image's size from its header: the same as Pillow says, or nothing where it cannot tell."""

from __future__ import annotations

import io
from typing import Any

import pytest
from PIL import Image

from formy_async.image_headers import still_size


def encoded(size: tuple[int, int], fmt: str, mode: str = "RGB", **options: Any) -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, "red").save(out, format=fmt, **options)
    return out.getvalue()


def animation(fmt: str, frames: int = 3) -> bytes:
    out = io.BytesIO()
    images = [Image.new("RGB", (20, 10), (i * 60, 0, 0)) for i in range(frames)]
    images[0].save(out, format=fmt, save_all=True, append_images=images[1:], duration=100)
    return out.getvalue()


def exif_rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90°: Pillow still reports the stored size
    return encoded((48, 16), "JPEG", exif=exif.tobytes())


@pytest.mark.parametrize(
    "data",
    [
        encoded((64, 48), "PNG"),
        encoded((1, 1), "PNG", mode="L"),
        encoded((300, 7), "PNG", mode="RGBA"),
        encoded((33, 17), "PNG", mode="P"),
        encoded((1024, 768), "JPEG"),
        encoded((13, 29), "JPEG", progressive=True),
        encoded((40, 30), "JPEG", mode="L"),
        exif_rotated_jpeg(),
        encoded((64, 48), "WEBP"),
        encoded((65, 49), "WEBP", lossless=True),
        encoded((31, 17), "WEBP", mode="RGBA"),
        encoded((16383, 2), "WEBP", lossless=True),
    ],
    ids=lambda data: f"{len(data)}B",
)
def test_a_still_image_has_the_size_pillow_reads(data: bytes) -> None:
    with Image.open(io.BytesIO(data)) as image:
        assert still_size(data) == image.size


@pytest.mark.parametrize("fmt", ["PNG", "WEBP"])
def test_an_animation_is_left_to_pillow(fmt: str) -> None:
    assert still_size(animation(fmt)) is None


def test_a_png_with_one_frame_in_its_animation_chunk_is_still() -> None:
    data = animation("PNG", frames=1)
    with Image.open(io.BytesIO(data)) as image:
        assert still_size(data) == image.size


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF"])
def test_other_formats_are_left_to_pillow(fmt: str) -> None:
    assert still_size(encoded((8, 8), fmt)) is None


@pytest.mark.parametrize("cut", [0, 5, 12, 20, 26])
def test_a_truncated_header_is_no_size(cut: int) -> None:
    for fmt in ("PNG", "JPEG", "WEBP"):
        assert still_size(encoded((8, 8), fmt)[:cut]) is None


def test_bytes_that_are_no_image_are_no_size() -> None:
    assert still_size(b"") is None
    assert still_size(b"\xff\xd8\x00\x00garbage") is None
    assert still_size(b"RIFF\x00\x00\x00\x00WEBPVP8 ") is None
