"""A job's event log over HTTP: what a WebSocket subscriber replays, for clients that poll."""

from __future__ import annotations

from aiohttp import web

from ..errors import InvalidQuery
from .context import STORE
from .security import owned_job

routes = web.RouteTableDef()


@routes.get("/api/jobs/{job_id}/events")
async def job_events(request: web.Request) -> web.Response:
    """The job's event log after `?after=N` (default 0)."""
    job_id = request.match_info["job_id"]
    try:
        after = int(request.query.get("after", "0"))
    except ValueError:
        raise InvalidQuery("after must be an integer") from None
    await owned_job(request, job_id)
    raw = await request.app[STORE].events(job_id, max(after, 0))
    return web.Response(text="[" + ",".join(raw) + "]", content_type="application/json")
