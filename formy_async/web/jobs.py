"""Jobs: submit (validated, limited, stored with its first event, queued), get, list, cancel."""

from __future__ import annotations

import json
import uuid
from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field, ValidationError

from ..errors import (
    AdminRequired,
    InvalidBody,
    InvalidQuery,
    JobFinished,
    JsonTooDeep,
    MalformedJson,
    PriorityNotAllowed,
    TimeLimitTooLong,
    UnknownUpload,
    WebhooksNotConfigured,
)
from ..models import Job, JobStatus, SubmitJob, Submitted
from ..store.jobs import Quota
from ..store.queue import queue_entry
from ..store.signals import request_cancel
from ..webhook_urls import check_webhook_url
from ..workflows import Workflow, check_raw_graph
from .context import CATALOGUE, LIFECYCLE, MODELS, QUEUE, REDIS, SETTINGS, STORE, UPLOADS
from .errors import validation_summary
from .security import caller, owned_job, view_of

routes = web.RouteTableDef()

MAX_JSON_DEPTH = 20


def json_response(model: BaseModel, status: int = 200, **kwargs: Any) -> web.Response:
    return web.Response(
        text=model.model_dump_json(), status=status, content_type="application/json", **kwargs
    )


async def read_json(request: web.Request) -> Any:
    """The body as JSON (the app bounds its size); nesting deeper than MAX_JSON_DEPTH refused."""
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MalformedJson(f"the body is not valid JSON: {exc}") from None
    if _depth(body) > MAX_JSON_DEPTH:
        raise JsonTooDeep(f"the JSON is nested more than {MAX_JSON_DEPTH} levels deep")
    return body


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > MAX_JSON_DEPTH:
            break
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


@routes.post("/api/jobs")
async def submit_job(request: web.Request) -> web.Response:
    identity = caller(request)
    try:
        body = SubmitJob.model_validate(await read_json(request))
    except ValidationError as exc:
        raise InvalidBody(
            'the body must be {"workflow": name, "params": {...}} or {"graph": {...}}: '
            + validation_summary(exc)
        ) from None
    settings = request.app[SETTINGS]
    if body.time_limit is not None and body.time_limit > settings.job_timeout:
        raise TimeLimitTooLong(f"time_limit may be at most {settings.job_timeout:g} seconds")
    if body.priority == "high" and not (
        identity.admin or identity.user in settings.high_priority_users
    ):
        raise PriorityNotAllowed("this user may not submit high priority jobs")
    job = await _job_from(request, body, identity.user, identity.admin)
    job.priority = body.priority
    if body.webhook_url is not None:
        if not settings.webhook_secret:
            raise WebhooksNotConfigured("webhooks are off: the service has no FORMY_WEBHOOK_SECRET")
        job.webhook_url = await check_webhook_url(
            body.webhook_url, allow_private=settings.webhook_allow_private
        )
    quota = Quota(
        jobs=settings.max_concurrent_tasks_per_user, per_minute=settings.submissions_per_minute
    )
    run = queue_entry(job, expires=settings.job_ttl)
    await request.app[STORE].create(
        job, Submitted(job_id=job.id, workflow=job.workflow), quota, run
    )
    view = view_of(request, job)
    return json_response(view, status=202, headers={"Location": view.links["self"]})


async def _job_from(request: web.Request, body: SubmitJob, user: str, admin: bool) -> Job:
    job_id = uuid.uuid4().hex
    if body.graph is not None:
        if not admin:
            raise AdminRequired("raw graphs need a token with the admin scope")
        check_raw_graph(body.graph, request.app[SETTINGS].raw_graph_nodes)
        return Job(
            id=job_id,
            user=user,
            workflow="raw",
            params={},
            graph=body.graph,
            time_limit=body.time_limit,
        )
    workflow = request.app[CATALOGUE].get_or_raise(body.workflow or "")
    params = workflow.resolve(body.params)
    await _check_references(request, workflow, params, user)
    return Job(
        id=job_id, user=user, workflow=workflow.name, params=params, time_limit=body.time_limit
    )


async def _check_references(
    request: web.Request, workflow: Workflow, params: dict[str, Any], user: str
) -> None:
    """Uploads the params name are the caller's; models they name are on a ComfyUI backend."""
    uploads = request.app[UPLOADS]
    for param in workflow.image_params():
        upload_id = params.get(param)
        if upload_id is None:
            continue
        upload = await uploads.get(upload_id)
        if upload is None or upload.user != user:
            raise UnknownUpload(
                f"{param}: no upload with id {upload_id!r} (it may have expired)",
                details=[{"param": param, "type": "upload_not_found"}],
            )
    await request.app[MODELS].check(workflow, params)


@routes.get("/api/jobs/{job_id}")
async def get_job(request: web.Request) -> web.Response:
    job = await owned_job(request, request.match_info["job_id"])
    return json_response(view_of(request, job))


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
    return web.json_response(
        {
            "jobs": [view_of(request, job).model_dump(mode="json") for job in jobs],
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
        raise InvalidQuery(validation_summary(exc)) from None


@routes.post("/api/jobs/{job_id}/cancel")
async def cancel_job(request: web.Request) -> web.Response:
    """A pending job is cancelled at once (200); a running one is stopped by its worker (202)."""
    job = await owned_job(request, request.match_info["job_id"])
    if job.is_final:
        raise JobFinished(f"job {job.id} is already {job.status}")
    ttl = request.app[SETTINGS].job_ttl
    if job.status == "pending":
        if await request.app[LIFECYCLE].cancel(job):
            # a worker that picked the job up meanwhile sees it final and stops its prompt
            await request_cancel(request.app[REDIS], job.id, ttl)
            await request.app[QUEUE].enqueue_webhook(job)
            return json_response(view_of(request, job))
        job = await request.app[STORE].get(job.id)
        raise JobFinished(f"job {job.id} is already {job.status}")
    await request_cancel(request.app[REDIS], job.id, ttl)
    return json_response(view_of(request, job), status=202)
