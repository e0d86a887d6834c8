"""Uploads: input images checked with Pillow, stored, and referred to by id in job params."""

from __future__ import annotations

import hashlib
import uuid

from aiohttp import BodyPartReader, MultipartReader, web

from ..errors import EmptyUpload, MissingFile, UploadNotFound, UploadTooLarge
from ..images import CheckedImage, check_upload
from ..models import Upload
from ..storage import input_key
from .bodies import body_deadline, malformed_forms, multipart_of
from .context import SETTINGS, STORAGE, UPLOADS
from .outputs import serve_stored
from .security import caller, may_see, signer

routes = web.RouteTableDef()

_CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}


async def _read_file_part(request: web.Request, limit: int) -> bytes:
    """The bytes of the multipart field `file`, read in chunks and never more than `limit`."""
    reader = await multipart_of(request, limit, "the image")
    with malformed_forms():
        return await _file_part(reader, limit)


async def _file_part(reader: MultipartReader, limit: int) -> bytes:
    async for part in reader:
        if not isinstance(part, BodyPartReader) or part.name != "file":
            continue
        data = bytearray()
        while chunk := await part.read_chunk(64 * 1024):
            data += chunk
            if len(data) > limit:
                raise UploadTooLarge(f"the upload is over the limit of {limit} bytes")
        if not data:
            raise EmptyUpload("the uploaded file is empty")
        return bytes(data)
    raise MissingFile("no field named `file` in the form")


@routes.post("/api/uploads")
async def create_upload(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    user = caller(request).user
    async with body_deadline(request):
        data = await _read_file_part(request, settings.upload_max_bytes)
    image = await check_upload(data, settings.upload_max_pixels)
    upload = await store_upload(request.app, user, image)
    return web.json_response(
        upload.view(signer(request.app)), status=201, headers={"Location": upload.url}
    )


async def store_upload(
    app: web.Application, user: str, image: CheckedImage, *, source_url: str | None = None
) -> Upload:
    """Store a checked image as an upload of `user` (what a job param names by its id)."""
    upload = Upload(
        id=uuid.uuid4().hex,
        user=user,
        format=image.format,
        content_type=_CONTENT_TYPES[image.format],
        width=image.width,
        height=image.height,
        size=len(image.data),
        sha256=hashlib.sha256(image.data).hexdigest(),
        source_url=source_url,
    )
    await app[STORAGE].put(input_key(upload.id), image.data, upload.content_type)
    await app[UPLOADS].put(upload)
    return upload


async def get_upload_record(request: web.Request, upload_id: str) -> Upload:
    """The upload, if the caller may see it; another user's is as unknown as a missing one."""
    upload = await request.app[UPLOADS].get(upload_id)
    if upload is None or not may_see(request, upload.user):
        raise UploadNotFound(f"no upload with id {upload_id!r}")
    return upload


@routes.get("/api/uploads/{upload_id}")
async def get_upload(request: web.Request) -> web.StreamResponse:
    upload = await get_upload_record(request, request.match_info["upload_id"])
    return await serve_stored(
        request,
        input_key(upload.id),
        content_type=upload.content_type,
        cache_control="private, max-age=3600",
        gone=UploadNotFound(f"upload {upload.id!r} has passed its retention time"),
    )
