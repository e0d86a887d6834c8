"""A job's files (outputs, kept FORMY_OUTPUTS_TTL; the live preview); stored bytes with `Range`."""

from __future__ import annotations

from aiohttp import web

from ..errors import (
    FileNotFound,
    FormyError,
    OutputExpired,
    OutputNotFound,
    PreviewNotFound,
    RangeNotSatisfiable,
)
from ..storage import output_key
from .context import STORAGE, STORE
from .security import owned_job

routes = web.RouteTableDef()


#: the most one answer to an open-ended range (`bytes=0-`, what a `<video>` asks first) holds
#: when the file is not on this machine's disk: the player asks for the rest as it plays
RANGE_CHUNK = 4 * 1024 * 1024


@routes.get("/api/jobs/{job_id}/outputs/{filename}")
async def get_output(request: web.Request) -> web.StreamResponse:
    """An output file, whole or a byte range of it (HTTP `Range`: a `<video>` seeks)."""
    job = await owned_job(request, request.match_info["job_id"])
    filename = request.match_info["filename"]
    output = next((o for o in job.outputs if o.filename == filename), None)
    if output is None:
        raise OutputNotFound(f"job {job.id} has no output {filename!r}")
    return await serve_stored(
        request,
        output_key(job.files_of, filename),  # a reused job's are the first job's files
        content_type=output.content_type,
        cache_control="private, max-age=86400",
        gone=OutputExpired(f"output {filename!r} has passed its retention time"),
    )


async def serve_stored(
    request: web.Request, key: str, *, content_type: str, cache_control: str, gone: FormyError
) -> web.StreamResponse:
    """The bytes stored under `key`, whole or the byte range asked for (200 or 206, with
    `Accept-Ranges`); `gone` is raised when nothing is stored there (any more)."""
    storage = request.app[STORAGE]
    headers = {
        "Cache-Control": cache_control,
        "Content-Type": content_type,
        "Accept-Ranges": "bytes",
    }
    path = storage.local_path(key)
    if path is not None:
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise gone from None
        _range(request, size)  # one it cannot serve is our JSON 416, not FileResponse's text
        return web.FileResponse(path, headers=headers)  # it serves the range itself
    try:
        size = await storage.size(key)
        wanted = _range(request, size)
        if wanted is None:
            return web.Response(body=await storage.read(key), headers=headers)
        start, stop = wanted
        data = await storage.read_range(key, start, stop)
    except FileNotFound:
        raise gone from None
    headers["Content-Range"] = f"bytes {start}-{stop - 1}/{size}"
    return web.Response(body=data, status=206, headers=headers)


def _range(request: web.Request, size: int) -> tuple[int, int] | None:
    """The byte range asked for, as (start, stop); None for the whole file."""
    if "Range" not in request.headers:
        return None
    try:
        wanted = request.http_range
    except ValueError:
        raise RangeNotSatisfiable(
            f"the Range header is malformed; the file has {size} bytes", size=size
        ) from None
    start, stop = wanted.start, wanted.stop
    if start is None:
        return None
    if start < 0:  # the last -start bytes
        start = max(0, size + start)
        stop = size
    elif stop is None:
        stop = min(size, start + RANGE_CHUNK)
    stop = min(stop, size)
    if start >= size or stop <= start:
        raise RangeNotSatisfiable(f"the range is outside the file's {size} bytes", size=size)
    return start, stop


@routes.get("/api/jobs/{job_id}/preview")
async def get_preview(request: web.Request) -> web.Response:
    """The latest live preview of a running job (see `preview` events)."""
    job = await owned_job(request, request.match_info["job_id"])
    preview = await request.app[STORE].preview(job.id)
    if preview is None:
        raise PreviewNotFound(f"job {job.id} has no preview")
    return web.Response(
        body=preview.data, content_type=preview.content_type, headers={"Cache-Control": "no-store"}
    )
