"""A job's files: its outputs (kept for FORMY_OUTPUTS_TTL) and its latest live preview."""

from __future__ import annotations

from aiohttp import web

from ..errors import FileNotFound, OutputExpired, OutputNotFound, PreviewNotFound
from ..storage import content_type_of, output_key
from .context import STORAGE, STORE
from .security import owned_job

routes = web.RouteTableDef()


@routes.get("/api/jobs/{job_id}/outputs/{filename}")
async def get_output(request: web.Request) -> web.StreamResponse:
    job = await owned_job(request, request.match_info["job_id"])
    filename = request.match_info["filename"]
    if not any(o.filename == filename for o in job.outputs):
        raise OutputNotFound(f"job {job.id} has no output {filename!r}")
    storage = request.app[STORAGE]
    key = output_key(job.id, filename)
    headers = {"Cache-Control": "private, max-age=86400"}
    gone = OutputExpired(f"output {filename!r} has passed its retention time")
    path = storage.local_path(key)
    if path is not None:
        if not path.exists():
            raise gone
        return web.FileResponse(
            path, headers={**headers, "Content-Type": content_type_of(filename)}
        )
    try:
        data = await storage.read(key)
    except FileNotFound:
        raise gone from None
    return web.Response(body=data, content_type=content_type_of(filename), headers=headers)


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
