"""The HTTP API: jobs, their events and outputs, workflows, health and readiness."""

from __future__ import annotations

import asyncio
import json
import uuid
from importlib import resources
from typing import Any

import aiohttp
from aiohttp import web
from pydantic import BaseModel, ValidationError

from .. import keys
from ..errors import BadRequest, NotFound
from ..models import Job, JobView, SubmitJob, Submitted
from ..storage import content_type_of, output_key
from .context import ARQ, CATALOGUE, HTTP, REDIS, SETTINGS, STORAGE, STORE

routes = web.RouteTableDef()


def _json(model: BaseModel | list[Any] | dict[str, Any], status: int = 200) -> web.Response:
    if isinstance(model, BaseModel):
        return web.Response(
            text=model.model_dump_json(), status=status, content_type="application/json"
        )
    return web.json_response(model, status=status)


async def _body(request: web.Request) -> Any:
    try:
        return await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}", code="malformed_json") from None


@routes.post("/api/jobs")
async def submit_job(request: web.Request) -> web.Response:
    """Validate the workflow and params, store the job and its first event, enqueue it."""
    try:
        body = SubmitJob.model_validate(await _body(request))
    except ValidationError as exc:
        raise BadRequest(
            'the body must be {"workflow": name, "params": {...}}: '
            + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()),
            code="invalid_body",
        ) from None
    workflow = request.app[CATALOGUE].get_or_raise(body.workflow)
    params = workflow.resolve(body.params)
    job = Job(id=uuid.uuid4().hex, workflow=workflow.name, params=params)
    await request.app[STORE].append(
        job, Submitted(job_id=job.id, workflow=job.workflow), create=True
    )
    await request.app[ARQ].enqueue_job(keys.RUN_JOB, job.id, _job_id=job.id)
    view = JobView.of(job)
    return web.Response(
        text=view.model_dump_json(),
        status=202,
        content_type="application/json",
        headers={"Location": view.links["self"]},
    )


@routes.get("/api/jobs")
async def list_jobs(request: web.Request) -> web.Response:
    """Newest first; `?limit=` (1–100, default 20) and `?cursor=` from the previous page."""
    try:
        limit = int(request.query.get("limit", "20"))
        cursor = float(request.query["cursor"]) if "cursor" in request.query else None
    except ValueError:
        raise BadRequest(
            "limit must be an integer and cursor a number", code="invalid_query"
        ) from None
    if not 1 <= limit <= 100:
        raise BadRequest("limit must be between 1 and 100", code="invalid_query")
    redis = request.app[REDIS]
    top: Any = f"({cursor!r}" if cursor is not None else "+inf"
    entries = await redis.zrevrangebyscore(
        keys.jobs_index(), top, "-inf", start=0, num=limit, withscores=True
    )
    store = request.app[STORE]
    jobs = []
    for member, _score in entries:
        try:
            jobs.append(JobView.of(await store.get(member.decode())).model_dump(mode="json"))
        except NotFound:
            continue  # expired meanwhile
    next_cursor = repr(entries[-1][1]) if len(entries) == limit else None
    return web.json_response({"jobs": jobs, "next_cursor": next_cursor})


@routes.get("/api/jobs/{job_id}")
async def get_job(request: web.Request) -> web.Response:
    job = await request.app[STORE].get(request.match_info["job_id"])
    return _json(JobView.of(job))


@routes.get("/api/jobs/{job_id}/events")
async def job_events(request: web.Request) -> web.Response:
    """The job's event log after `?after=N` (default 0): what a WebSocket subscriber replays."""
    job_id = request.match_info["job_id"]
    try:
        after = int(request.query.get("after", "0"))
    except ValueError:
        raise BadRequest("after must be an integer", code="invalid_query") from None
    store = request.app[STORE]
    await store.get(job_id)
    raw = await store.events(job_id, max(after, 0))
    return web.Response(text="[" + ",".join(raw) + "]", content_type="application/json")


@routes.get("/api/jobs/{job_id}/outputs/{filename}")
async def get_output(request: web.Request) -> web.StreamResponse:
    job = await request.app[STORE].get(request.match_info["job_id"])
    filename = request.match_info["filename"]
    if not any(o.filename == filename for o in job.outputs):
        raise NotFound(f"job {job.id} has no output {filename!r}", code="output_not_found")
    storage = request.app[STORAGE]
    key = output_key(job.id, filename)
    headers = {"Cache-Control": "private, max-age=86400"}
    path = storage.local_path(key)
    if path is not None:
        if not path.exists():
            raise NotFound(f"output {filename!r} is no longer stored", code="output_not_found")
        return web.FileResponse(
            path, headers={**headers, "Content-Type": content_type_of(filename)}
        )
    data = await storage.read(key)
    return web.Response(body=data, content_type=content_type_of(filename), headers=headers)


@routes.get("/api/workflows")
async def list_workflows(request: web.Request) -> web.Response:
    catalogue = request.app[CATALOGUE]
    return web.json_response({"workflows": [w.describe() for w in catalogue.values()]})


@routes.get("/api/workflows/{name}")
async def get_workflow(request: web.Request) -> web.Response:
    return web.json_response(
        request.app[CATALOGUE].get_or_raise(request.match_info["name"]).describe()
    )


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
    return web.Response(text=page, content_type="text/html")
