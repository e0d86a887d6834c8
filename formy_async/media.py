"""What an output file is: its kind and content type, and (where cheap) its size and duration."""

from __future__ import annotations

import asyncio
import contextlib
import io
import mimetypes
import posixpath
import warnings
from dataclasses import dataclass

from .image_headers import still_size
from .models import OutputKind

IMAGE = frozenset({".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".avif"})
VIDEO = frozenset({".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v"})
AUDIO = frozenset({".flac", ".mp3", ".opus", ".ogg", ".wav", ".m4a", ".aac"})
THREE_D = frozenset({".glb", ".gltf", ".obj", ".fbx", ".usdz", ".ply", ".stl"})
TEXT = frozenset({".txt", ".md", ".json"})

#: what `mimetypes` does not know, or knows differently on different machines
_CONTENT_TYPES = {
    ".webp": "image/webp",
    ".avif": "image/avif",
    ".webm": "video/webm",
    ".mkv": "video/x-matroska",
    ".flac": "audio/flac",
    ".opus": "audio/ogg",  # what SaveAudioOpus writes: Opus in an Ogg container
    ".ogg": "audio/ogg",
    ".mp3": "audio/mpeg",
    ".m4a": "audio/mp4",
    ".glb": "model/gltf-binary",
    ".gltf": "model/gltf+json",
    ".obj": "model/obj",
    ".usdz": "model/vnd.usdz+zip",
    ".stl": "model/stl",
    ".md": "text/markdown",
}


def extension(name: str) -> str:
    return posixpath.splitext(name)[1].lower()


def extension_of_type(content_type: str) -> str:
    """An extension for a MIME type (`.bin` for one nobody knows)."""
    media_type = content_type.split(";")[0].strip().lower()
    known = next((ext for ext, kind in _CONTENT_TYPES.items() if kind == media_type), None)
    return known or mimetypes.guess_extension(media_type) or ".bin"


def content_type_of(name: str) -> str:
    ext = extension(name)
    return _CONTENT_TYPES.get(ext) or mimetypes.guess_type(name)[0] or "application/octet-stream"


def kind_of(name: str, format_hint: str = "") -> OutputKind:
    """The kind of a file from its name, or the MIME type some nodes give (`video/h264-mp4`)."""
    ext = extension(name)
    if ext in VIDEO or format_hint.startswith("video/"):
        return "video"
    if ext in AUDIO or format_hint.startswith("audio/"):
        return "audio"
    if ext in IMAGE or format_hint.startswith("image/"):
        return "image"
    if ext in THREE_D:
        return "3d"
    if ext in TEXT:
        return "text"
    return "file"


@dataclass(frozen=True)
class MediaInfo:
    """What probing a file found (None where it could not tell)."""

    width: int | None = None
    height: int | None = None
    duration: float | None = None
    animated: bool = False


def _probe_image(data: bytes, *, frames: bool = True) -> MediaInfo:
    """Its size from the header; with `frames`, an animation's duration, which takes reading
    every frame (without, an animation is only said to be one)."""
    # Pillow is imported here, not at start: a still PNG, JPEG or WebP (nearly every output)
    # needs no decoder, and a process that never meets another kind goes without (~2.4 MB)
    from PIL import Image, UnidentifiedImageError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a probe of our own outputs: bombs are ComfyUI's
        try:
            with Image.open(io.BytesIO(data)) as image:
                if not getattr(image, "is_animated", False):
                    return MediaInfo(image.width, image.height)
                if not frames:
                    return MediaInfo(image.width, image.height, animated=True)
                total = 0
                for index in range(int(getattr(image, "n_frames", 1))):
                    image.seek(index)
                    image.load()  # a frame's duration is read with its data
                    total += int(image.info.get("duration", 0))
                duration = total / 1000 if total else None
                return MediaInfo(image.width, image.height, duration, animated=True)
        except (UnidentifiedImageError, OSError, ValueError):
            return MediaInfo()


def _probe_av(data: bytes) -> MediaInfo:
    import av  # only the worker probes video and audio

    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            duration = container.duration / 1_000_000 if container.duration else None
            width = height = None
            with contextlib.suppress(IndexError):
                stream = container.streams.video[0]
                width, height = stream.width or None, stream.height or None
            return MediaInfo(width, height, duration)
    except (av.FFmpegError, OSError, ValueError):
        return MediaInfo()


async def probe(data: bytes, kind: OutputKind) -> MediaInfo:
    """Width and height of images and videos, duration of animations, video and audio."""
    if kind == "image":
        size = still_size(data)
        if size is not None:
            return MediaInfo(*size)
        # a header is read in tens of microseconds, less than a trip to a thread takes
        info = _probe_image(data, frames=False)
        return await asyncio.to_thread(_probe_image, data) if info.animated else info
    if kind in ("video", "audio"):
        return await asyncio.to_thread(_probe_av, data)
    return MediaInfo()
