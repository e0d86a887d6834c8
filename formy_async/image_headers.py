"""An image's size read from its header bytes alone: still PNG, JPEG and WebP, no decoder."""

from __future__ import annotations

import struct

_PNG = b"\x89PNG\r\n\x1a\n"
#: JPEG's start-of-frame markers (not DHT C4, JPG C8 or DAC CC), whose segment holds the size
_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
#: JPEG markers that stand alone, with no length after them
_BARE = frozenset({0x01, *range(0xD0, 0xD9)})


def still_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of a still PNG, JPEG or WebP, as Pillow reports them (before any EXIF
    rotation); None for anything else, an animation included, or a header that does not parse."""
    found = still_image(data)
    return None if found is None else found[1:]


def still_image(data: bytes) -> tuple[str, int, int] | None:
    """(format, width, height) as `still_size` reads them, the format as Pillow names it in
    lower case: "png", "jpeg" or "webp"."""
    try:
        if data.startswith(_PNG):
            return _named("png", _png(data))
        if data.startswith(b"\xff\xd8"):
            return _named("jpeg", _jpeg(data))
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            return _named("webp", _webp(data))
    except (struct.error, IndexError):
        return None
    return None


def _named(fmt: str, size: tuple[int, int] | None) -> tuple[str, int, int] | None:
    return None if size is None else (fmt, *size)


def _png(data: bytes) -> tuple[int, int] | None:
    if data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack_from(">II", data, 16)
    # an APNG says so in an acTL chunk before its first image data; a file cut off before
    # its image data is left to Pillow's judgement
    at = 8
    while at + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, at)
        if kind == b"acTL" and struct.unpack_from(">I", data, at + 8)[0] > 1:
            return None
        if kind == b"IDAT":
            return (width, height) if width and height else None
        at += 12 + length
    return None


def _jpeg(data: bytes) -> tuple[int, int] | None:
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte before a marker
            at += 1
            continue
        if marker in _BARE:
            at += 2
            continue
        if marker in _SOF:
            height, width = struct.unpack_from(">HH", data, at + 5)
            return (width, height) if width and height else None
        if marker in (0xD9, 0xDA):  # end of image, or the scan began: no frame header seen
            return None
        at += 2 + struct.unpack_from(">H", data, at + 2)[0]
    return None


def _webp(data: bytes) -> tuple[int, int] | None:
    if len(data) < 30:  # every kind's size lies within the first 30 bytes
        return None
    kind = data[12:16]
    if kind == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack_from("<HH", data, 26)
        return width & 0x3FFF, height & 0x3FFF
    if kind == b"VP8L" and data[20] == 0x2F:
        bits = struct.unpack_from("<I", data, 21)[0]
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if kind == b"VP8X":
        if data[20] & 0x02:  # the animation flag
            return None
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    return None
