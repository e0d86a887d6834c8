"""The HTTP API for a caller's jobs (inspect, list, cancel, events, outputs) and health."""

from __future__ import annotations

import asyncio
import html
from importlib import resources
from typing import Any

import aiohttp
from aiohttp import web
from pydantic import BaseModel, Field, ValidationError

from .. import keys
from ..auth import mint_token
from ..errors import BadRequest, Conflict, Gone, NotFound
from ..models import Cancelled, JobStatus, JobView, now
from ..signals import request_cancel
from ..storage import content_type_of, output_key
from ..webhooks import enqueue_webhook
from .context import ARQ, HTTP, REDIS, SETTINGS, STORAGE, STORE
from .errors import validation_summary
from .security import caller, owned_job, signer

routes = web.RouteTableDef()


def _json(model: BaseModel | list[Any] | dict[str, Any], status: int = 200) -> web.Response:
    if isinstance(model, BaseModel):
        return web.Response(
            text=model.model_dump_json(), status=status, content_type="application/json"
        )
    return web.json_response(model, status=status)


@routes.post("/api/jobs/{job_id}/cancel")
async def cancel_job(request: web.Request) -> web.Response:
    """A pending job is cancelled at once (200); a running one is stopped by its worker (202)."""
    store = request.app[STORE]
    job = await owned_job(request, request.match_info["job_id"])
    if job.is_final:
        raise Conflict(f"job {job.id} is already {job.status}", code="job_finished")
    if job.status == "pending":
        job.status, job.finished_at = "cancelled", now()
        if await store.append(job, Cancelled(job_id=job.id)):
            # a worker that picked the job up meanwhile sees it final and stops its prompt
            await request_cancel(request.app[REDIS], job.id, request.app[SETTINGS].job_ttl)
            await enqueue_webhook(request.app[ARQ], job)
            return _json(JobView.of(job, signer(request.app)))
        job = await store.get(job.id)
        raise Conflict(f"job {job.id} is already {job.status}", code="job_finished")
    await request_cancel(request.app[REDIS], job.id, request.app[SETTINGS].job_ttl)
    return _json(JobView.of(job, signer(request.app)), status=202)


@routes.get("/api/jobs/{job_id}/preview")
async def get_preview(request: web.Request) -> web.Response:
    """The latest live preview of a running job (see `preview` events)."""
    job = await owned_job(request, request.match_info["job_id"])
    preview: dict[bytes, bytes] = await request.app[REDIS].hgetall(keys.job_preview(job.id))  # type: ignore[misc]
    if not preview:
        raise NotFound(f"job {job.id} has no preview", code="preview_not_found")
    return web.Response(
        body=preview[b"data"],
        content_type=preview[b"type"].decode(),
        headers={"Cache-Control": "no-store"},
    )


@routes.get("/api/jobs")
async def list_jobs(request: web.Request) -> web.Response:
    """Newest first; `?status=`, `?limit=` (1–100, default 20), `?cursor=` from the last page."""
    identity = caller(request)
    query = _list_query(request)
    jobs, next_cursor = await request.app[STORE].page(
        user=None if identity.admin else identity.user,
        status=query.status,
        limit=query.limit,
        cursor=query.cursor,
    )
    sign = signer(request.app)
    return web.json_response(
        {
            "jobs": [JobView.of(job, sign).model_dump(mode="json") for job in jobs],
            "next_cursor": next_cursor,
        }
    )


class _ListQuery(BaseModel):
    status: JobStatus | None = None
    limit: int = Field(20, ge=1, le=100)
    cursor: float | None = None


def _list_query(request: web.Request) -> _ListQuery:
    try:
        return _ListQuery.model_validate(dict(request.query))
    except ValidationError as exc:
        raise BadRequest(
            validation_summary(exc),
            code="invalid_query",
        ) from None


@routes.get("/api/jobs/{job_id}")
async def get_job(request: web.Request) -> web.Response:
    job = await owned_job(request, request.match_info["job_id"])
    return _json(JobView.of(job, signer(request.app)))


@routes.get("/api/jobs/{job_id}/events")
async def job_events(request: web.Request) -> web.Response:
    """The job's event log after `?after=N` (default 0): what a WebSocket subscriber replays."""
    job_id = request.match_info["job_id"]
    try:
        after = int(request.query.get("after", "0"))
    except ValueError:
        raise BadRequest("after must be an integer", code="invalid_query") from None
    store = request.app[STORE]
    await owned_job(request, job_id)
    raw = await store.events(job_id, max(after, 0))
    return web.Response(text="[" + ",".join(raw) + "]", content_type="application/json")


@routes.get("/api/jobs/{job_id}/outputs/{filename}")
async def get_output(request: web.Request) -> web.StreamResponse:
    job = await owned_job(request, request.match_info["job_id"])
    filename = request.match_info["filename"]
    if not any(o.filename == filename for o in job.outputs):
        raise NotFound(f"job {job.id} has no output {filename!r}", code="output_not_found")
    storage = request.app[STORAGE]
    key = output_key(job.id, filename)
    headers = {"Cache-Control": "private, max-age=86400"}
    gone = Gone(f"output {filename!r} has passed its retention time", code="output_expired")
    path = storage.local_path(key)
    if path is not None:
        if not path.exists():
            raise gone
        return web.FileResponse(
            path, headers={**headers, "Content-Type": content_type_of(filename)}
        )
    try:
        data = await storage.read(key)
    except NotFound:
        raise gone from None
    return web.Response(body=data, content_type=content_type_of(filename), headers=headers)


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """The process is alive (it answers); says nothing about its dependencies."""
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """Redis and ComfyUI both answer: 200, else 503 naming what does not."""
    checks = dict(
        zip(
            ("redis", "comfyui"),
            await asyncio.gather(_check_redis(request), _check_comfyui(request)),
            strict=True,
        )
    )
    ready = all(v == "ok" for v in checks.values())
    return web.json_response(
        {"status": "ok" if ready else "unavailable", "checks": checks}, status=200 if ready else 503
    )


async def _check_redis(request: web.Request) -> str:
    try:
        await asyncio.wait_for(request.app[REDIS].ping(), timeout=2)
    except Exception as exc:
        return f"error: {exc!r}"
    return "ok"


async def _check_comfyui(request: web.Request) -> str:
    url = request.app[SETTINGS].comfyui_base + "/system_stats"
    try:
        async with request.app[HTTP].get(url, timeout=aiohttp.ClientTimeout(total=3)) as resp:
            return "ok" if resp.status == 200 else f"error: HTTP {resp.status}"
    except Exception as exc:
        return f"error: {exc!r}"


@routes.get("/")
async def index(request: web.Request) -> web.Response:
    page = resources.files("formy_async").joinpath("static/index.html").read_text()
    settings = request.app[SETTINGS]
    if settings.page_user:  # `formy-async run` only: zero set-up for the person trying it
        token = mint_token(settings.secret_key, settings.page_user, ttl=12 * 3600)
        meta = f'<meta name="formy-token" content="{html.escape(token)}">'
        page = page.replace("</head>", f"{meta}\n</head>", 1)
    return web.Response(text=page, content_type="text/html", headers={"Cache-Control": "no-store"})
