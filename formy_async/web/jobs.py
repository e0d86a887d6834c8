"""Jobs: submit (validated, limited, stored with its first event, queued), get, list, cancel."""

from __future__ import annotations

import time
import uuid
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import (
    GraphsNotAllowed,
    InvalidBody,
    InvalidQuery,
    JobFinished,
    PriorityNotAllowed,
    TimeLimitTooLong,
    UnknownUpload,
    WebhooksNotConfigured,
)
from ..models import Job, JobStatus, SubmitJob
from ..store.claims import DuplicateSubmission
from ..store.connections import WEB_WRITE_WINDOW
from ..store.jobs import Quota
from ..store.queue import queue_entry
from ..store.signals import request_cancel
from ..webhook_urls import check_webhook_url
from ..workflows import Workflow, check_raw_graph
from .bodies import read_json
from .context import CATALOGUE, LIFECYCLE, MODELS, QUEUE, REDIS, SETTINGS, STORE, UPLOADS
from .errors import validation_summary
from .fetch import with_fetched_inputs
from .idempotency import claims_of, earlier_answer, replayed
from .reuse import Submission, create, fingerprint, store_reusable
from .security import caller, owned_job, view_of
from .usage import check_budget

routes = web.RouteTableDef()


def _deadline() -> float:
    """When a write this request makes must have reached Redis, or not happen at all."""
    return time.time() + WEB_WRITE_WINDOW


def json_response(model: BaseModel, status: int = 200, **kwargs: Any) -> web.Response:
    return web.Response(
        text=model.model_dump_json(), status=status, content_type="application/json", **kwargs
    )


@routes.post("/api/jobs")
async def submit_job(request: web.Request) -> web.Response:
    identity = caller(request)
    raw = await read_json(request)
    claims = claims_of(request, identity.user, raw)  # an Idempotency-Key, if any
    if (earlier := await earlier_answer(request, claims)) is not None:
        return earlier
    try:
        body = SubmitJob.model_validate(raw)
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
    await check_budget(request, identity)  # before any image URL is fetched
    job = await _job_from(request, body, identity.user, identity.may_submit_graphs)
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
    run = queue_entry(job, expires=settings.job_ttl, weight=settings.weight(job.user))
    try:
        await _store(request, Submission(job, quota, run, claims, _deadline()), body.reuse)
    except DuplicateSubmission as duplicate:  # the same key and body, a moment earlier
        return await replayed(request, duplicate.job_id)
    view = view_of(request, job)
    return json_response(view, status=202, headers={"Location": view.links["self"]})


async def _store(request: web.Request, sub: Submission, reuse: bool | None) -> None:
    """Store (and queue) the job; a reusable one (the request's `reuse`, else its manifest's)
    may finish at once or follow another."""
    job = sub.job
    if job.graph is None:
        workflow = request.app[CATALOGUE].get_or_raise(job.workflow)
        if workflow.manifest.reuse if reuse is None else reuse:
            fp = await fingerprint(request.app, workflow, job.params)
            await store_reusable(request, sub, fp)
            return
    await create(request.app, sub)


async def _job_from(request: web.Request, body: SubmitJob, user: str, graphs: bool) -> Job:
    job_id = uuid.uuid4().hex
    if body.graph is not None:
        if not graphs:
            raise GraphsNotAllowed("graphs need a token with the graphs (or admin) scope")
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
    params = workflow.resolve(await with_fetched_inputs(request, workflow, body.params, user))
    await _check_references(request, workflow, params, user)
    return Job(
        id=job_id, user=user, workflow=workflow.name, params=params, time_limit=body.time_limit
    )


async def _check_references(
    request: web.Request, workflow: Workflow, params: dict[str, Any], user: str
) -> None:
    """Uploads the params name are the caller's, positions lie inside them (as their records
    give their sizes), and models they name are on a ComfyUI backend."""
    uploads = request.app[UPLOADS]
    sizes: dict[str, tuple[int, int]] = {}
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
        sizes[param] = (upload.width, upload.height)
    workflow.check_within(params, sizes)
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
    model_config = ConfigDict(extra="forbid")  # a misspelt parameter is said, not ignored

    status: JobStatus | None = None
    limit: int = Field(20, ge=1, le=100)
    # a position in the newest-first order: any finite number is one (`(nan` would be a 500)
    cursor: float | None = Field(None, allow_inf_nan=False)


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
    job, at_once = await cancel(request, job)
    if job.is_final and not at_once:
        raise JobFinished(f"job {job.id} is already {job.status}")
    return json_response(view_of(request, job), status=200 if at_once else 202)


async def cancel(request: web.Request, job: Job) -> tuple[Job, bool]:
    """Cancel a job that is not final: a pending one at once (True), a running one by asking
    its worker (False). Returns the job as it now is (final meanwhile, if it won the race)."""
    ttl = request.app[SETTINGS].job_ttl
    if job.status == "pending":
        if await request.app[LIFECYCLE].cancel(job, deadline=_deadline()):
            # a worker that picked the job up meanwhile sees it final and stops its prompt
            await request_cancel(request.app[REDIS], job.id, ttl)
            await request.app[QUEUE].enqueue_webhook(job)
            return job, True
        job = await request.app[STORE].get(job.id)
        if job.is_final:
            return job, False
    await request_cancel(request.app[REDIS], job.id, ttl)
    return job, False
