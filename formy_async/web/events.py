"""A job's event log over HTTP: as JSON (what a WebSocket subscriber replays), or streamed."""

from __future__ import annotations

from aiohttp import web

from ..errors import InvalidQuery
from ..models import MAX_SEQ
from .context import STORE
from .security import owned_job
from .sse import stream_events, wants_stream

routes = web.RouteTableDef()


@routes.get("/api/jobs/{job_id}/events")
async def job_events(request: web.Request) -> web.StreamResponse:
    """The job's event log after `?after=N` (default 0); with `Accept: text/event-stream`, a
    stream of its events from there on (after `Last-Event-ID` when an EventSource resumes)."""
    job_id = request.match_info["job_id"]
    after = after_seq(request.query.get("after", "0"))
    job = await owned_job(request, job_id)
    if wants_stream(request):
        resumed = request.headers.get("Last-Event-ID")
        after = after_seq(resumed.strip()) if resumed is not None else after
        return await stream_events(request, job_id, after, final=job.is_final)
    raw = await request.app[STORE].events(job_id, after)
    return web.Response(text="[" + ",".join(raw) + "]", content_type="application/json")


def after_seq(text: str) -> int:
    """A seq as the WebSocket takes it: 0 to MAX_SEQ (Redis refuses indexes past 2**63)."""
    # digits counted first: Python refuses to convert more than 4,300 of them
    digits = text.isascii() and text.isdigit() and len(text) <= len(str(MAX_SEQ))
    after = int(text) if digits else -1
    if not 0 <= after <= MAX_SEQ:
        raise InvalidQuery(f"after must be a seq, an integer from 0 to {MAX_SEQ}")
    return after
