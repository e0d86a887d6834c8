"""v2 asset uploads as they arrive: the multipart form read within its limits, the file's
blake3 computed chunk by chunk, each field checked."""

from __future__ import annotations

import re
from dataclasses import dataclass

from aiohttp import BodyPartReader, MultipartReader, hdrs, web

from ...errors import BadRequest, EmptyUpload, InvalidBody, MissingFile, UploadTooLarge
from ..bodies import malformed_forms, multipart_of

HASH = re.compile(r"^blake3:[0-9a-f]{64}$")
#: `type/subtype`, then parameters of printable characters (no line breaks in a header)
_CONTENT_TYPE = re.compile(r"^[A-Za-z0-9][\w.+-]{0,126}/[A-Za-z0-9][\w.+-]{0,126}(;[ -~]{0,200})?$")
_DEFAULT_TYPE = "application/octet-stream"
FILE_PATH_MAX = 1024
_FIELD_MAX = 4096  # bytes of one text part
_PARTS_MAX = 64  # tags come one part each
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class UploadForm:
    """What an upload's multipart body holds, its file's blake3 computed while it arrived."""

    data: bytes
    hash: str
    content_type: str
    file_path: str | None
    expected_hash: str | None


def checked_hash(value: str, where: str, error: type[BadRequest] = InvalidBody) -> str:
    """`blake3:<64 hex digits>`, lowercased; anything else is refused naming `where`."""
    digest = value.strip().lower()
    if not HASH.match(digest):
        raise error(f"{where}: {value[:80]!r} is not a hash: expected blake3:<64 hex digits>")
    return digest


async def read_form(request: web.Request, limit: int) -> UploadForm:
    reader = await multipart_of(request, limit, "the bytes")
    with malformed_forms():
        return await _parts(reader, limit)


async def _parts(reader: MultipartReader, limit: int) -> UploadForm:
    fields: dict[str, str] = {}
    file: tuple[bytes, str, BodyPartReader] | None = None
    count = 0
    async for part in reader:
        count += 1
        if count > _PARTS_MAX:
            raise InvalidBody(f"the form has more than {_PARTS_MAX} parts")
        if not isinstance(part, BodyPartReader):
            continue  # a nested multipart: nothing of ours
        if part.name == "file":
            if file is not None:
                raise InvalidBody("the form has more than one part named `file`")
            file = (*await _read_file(part, limit), part)
        elif part.name in ("content_type", "file_path", "expected_hash"):
            fields[part.name] = await _read_field(part)
    if file is None:
        raise MissingFile("no part named `file` in the form: it holds the bytes to upload")
    data, digest, part = file
    return UploadForm(
        data=data,
        hash=digest,
        content_type=_content_type(
            fields.get("content_type") or part.headers.get(hdrs.CONTENT_TYPE)
        ),
        file_path=_file_path(fields.get("file_path") or part.filename),
        expected_hash=checked_hash(fields["expected_hash"], "expected_hash")
        if fields.get("expected_hash")
        else None,
    )


async def _read_file(part: BodyPartReader, limit: int) -> tuple[bytes, str]:
    from blake3 import blake3  # with the first v2 upload: a process that takes none goes without

    data, hasher = bytearray(), blake3()
    while chunk := await part.read_chunk(_CHUNK):
        if len(data) + len(chunk) > limit:
            raise UploadTooLarge(f"the upload is over the limit of {limit} bytes")
        data += chunk
        hasher.update(chunk)
    if not data:
        raise EmptyUpload("the uploaded file is empty")
    return bytes(data), "blake3:" + hasher.hexdigest()


async def _read_field(part: BodyPartReader) -> str:
    data = bytearray()
    while chunk := await part.read_chunk(_FIELD_MAX):
        data += chunk
        if len(data) > _FIELD_MAX:
            raise InvalidBody(f"the form field {part.name!r} is over {_FIELD_MAX} bytes")
    try:
        return data.decode().strip()
    except UnicodeDecodeError:
        raise InvalidBody(f"the form field {part.name!r} is not UTF-8 text") from None


def _content_type(value: str | None) -> str:
    if not value:
        return _DEFAULT_TYPE
    if not _CONTENT_TYPE.match(value):
        raise InvalidBody(f"content_type {value[:80]!r} is not a media type like image/png")
    return value


def _file_path(value: str | None) -> str | None:
    if value is not None and len(value) > FILE_PATH_MAX:
        raise InvalidBody(f"file_path is over {FILE_PATH_MAX} characters")
    return value or None
