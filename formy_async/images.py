"""Pillow work on image bytes, run off the event loop."""

from __future__ import annotations

import asyncio
import io

from PIL import Image, UnidentifiedImageError


def _probe(data: bytes) -> tuple[str, int, int] | None:
    try:
        with Image.open(io.BytesIO(data)) as image:
            return (image.format or "").lower(), image.width, image.height
    except (UnidentifiedImageError, OSError):
        return None


async def probe(data: bytes) -> tuple[str, int, int] | None:
    """(format, width, height) of an image, or None when the bytes are no image Pillow knows."""
    return await asyncio.to_thread(_probe, data)
