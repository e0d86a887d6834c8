"""Image bytes: probing (by the header where it is enough) and checking uploads (Pillow)."""

from __future__ import annotations

import asyncio
import functools
import io
import warnings
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

from .errors import CorruptImage, ImageTooLarge, UnsupportedImage
from .image_headers import still_image

if TYPE_CHECKING:
    from PIL import Image

ALLOWED_FORMATS = {"PNG": "png", "JPEG": "jpeg", "WEBP": "webp"}


@dataclass(frozen=True)
class CheckedImage:
    """An upload that passed every check, re-encoded without its metadata."""

    format: str
    width: int
    height: int
    data: bytes


@functools.cache
def _pillow() -> ModuleType:
    """Pillow, imported with the first image: the web process checks uploads only now and then,
    and would otherwise carry it (~2 MB) from start-up on."""
    import PIL.Image
    import PIL.ImageOps

    return PIL


def _probe(data: bytes) -> tuple[str, int, int] | None:
    pil = _pillow()
    try:
        with pil.Image.open(io.BytesIO(data)) as image:
            return (image.format or "").lower(), image.width, image.height
    except (pil.UnidentifiedImageError, OSError, pil.Image.DecompressionBombError):
        return None


async def probe(data: bytes) -> tuple[str, int, int] | None:
    """(format, width, height) of an image, or None when the bytes are no image Pillow knows.
    A still PNG, JPEG or WebP (every upload, once re-encoded) is read from its header, on the
    loop; anything else by Pillow, in a thread."""
    found = still_image(data)
    return found if found is not None else await asyncio.to_thread(_probe, data)


def _check(data: bytes, max_pixels: int) -> CheckedImage:
    pil = _pillow()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pil.Image.DecompressionBombWarning)
            image = pil.Image.open(io.BytesIO(data))
    except (pil.Image.DecompressionBombError, pil.Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"the image has too many pixels (limit {max_pixels})") from exc
    except (pil.UnidentifiedImageError, OSError) as exc:
        raise UnsupportedImage("the file is not a PNG, JPEG or WEBP image") from exc
    with image:
        fmt = ALLOWED_FORMATS.get(image.format or "")
        if fmt is None:
            raise UnsupportedImage(f"{image.format} images are not accepted: use PNG, JPEG or WEBP")
        if image.width * image.height > max_pixels:
            raise ImageTooLarge(
                f"the image is {image.width}×{image.height} pixels; the limit is {max_pixels}"
            )
        try:
            image.load()
        except (OSError, SyntaxError, ValueError) as exc:
            raise CorruptImage(f"the image data is truncated or corrupt: {exc}") from exc
        return _reencode(image, fmt)


def _reencode(image: Image.Image, fmt: str) -> CheckedImage:
    """Apply the EXIF orientation and drop every metadata chunk by writing pixels only."""
    upright = _pillow().ImageOps.exif_transpose(image)
    out = io.BytesIO()
    if fmt == "jpeg":
        upright.convert("RGB").save(out, format="JPEG", quality=95)
    elif fmt == "webp":
        upright.save(out, format="WEBP", quality=95)
    else:
        upright.save(out, format="PNG")
    return CheckedImage(fmt, upright.width, upright.height, out.getvalue())


async def check_upload(data: bytes, max_pixels: int) -> CheckedImage:
    """The upload re-encoded clean, or the FormyError naming the rule it broke."""
    return await asyncio.to_thread(_check, data, max_pixels)
