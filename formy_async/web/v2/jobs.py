"""v2 jobs: submit an API-format graph, get, list, its workflow, cancel, its event stream."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ...asset_refs import asset_ids
from ...auth import Identity
from ...errors import (
    GraphsNotAllowed,
    IdempotencyKeyReuse,
    InvalidBody,
    InvalidQuery,
    MetadataInvalid,
    MissingAsset,
    WorkflowFormatUi,
)
from ...models import Job
from ...store.claims import DuplicateSubmission, submitted_with
from ...store.connections import WEB_WRITE_WINDOW
from ...store.jobs import Quota
from ...store.queue import queue_entry
from ...store.signals import cancel_requested
from ...workflows import check_raw_graph
from ..bodies import read_json
from ..context import ASSETS, CATALOGUE, REDIS, SETTINGS, STORE
from ..errors import validation_summary
from ..idempotency import claims_of
from ..jobs import cancel
from ..reuse import Submission, create
from ..security import caller, owned_job
from ..usage import check_budget
from .events import stream_v2_events
from .views import Presenter, json_answer
from .wire import PREFIX, V2Submit, V2Workflow

routes = web.RouteTableDef()

#: what a label's key may be (as a query's `metadata[key]=` names it) and how long its value
_LABEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,63}$")
_LABEL_VALUE_MAX = 256
#: editor exports carry these at the top; API-format graphs are a map of node ids
_EDITOR_KEYS = ("nodes", "links")


def _check_labels(labels: dict[str, str]) -> None:
    for key, value in labels.items():
        if not _LABEL_KEY.match(key):
            raise MetadataInvalid(
                f"metadata key {key!r}: 1–64 letters, digits or . _ : / -, starting with one of "
                "the first two"
            )
        if len(value) > _LABEL_VALUE_MAX:
            raise MetadataInvalid(
                f"metadata value of {key!r} is over {_LABEL_VALUE_MAX} characters"
            )


def _submission(raw: Any) -> V2Submit:
    if isinstance(raw, dict):
        graph = raw.get("workflow")
        if isinstance(graph, dict) and all(k in graph for k in _EDITOR_KEYS):
            raise WorkflowFormatUi(
                "the workflow is an editor export (nodes/links): save it in the API format"
            )
        labels = raw.get("metadata")
        if isinstance(labels, dict) and len(labels) > 16:
            raise MetadataInvalid(f"metadata has {len(labels)} pairs; at most 16 are kept")
    try:
        return V2Submit.model_validate(raw)
    except ValidationError as exc:
        raise InvalidBody(
            'the body must be {"workflow": {node id: {"class_type", "inputs"}}, …}: '
            + validation_summary(exc)
        ) from None


async def _check_assets(request: web.Request, graph: dict[str, Any], user: str) -> None:
    """Every `core/ASSET` reference names a live asset of the caller."""
    store = request.app[ASSETS]
    for asset_id, places in asset_ids(graph).items():
        asset = await store.get(asset_id)
        if asset is None or asset.user != user:
            node_id, name = places[0]
            raise MissingAsset(
                f"node {node_id} input {name!r}: no asset with id {asset_id!r} "
                "(upload it first; it may have expired)",
                details={"asset_id": asset_id, "node_id": node_id, "input": name},
            )


async def _refuse_reused_key(request: web.Request, identity: Identity) -> None:
    """v2 refuses a key it has seen (the job it made is named), whatever the body."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return
    found = await submitted_with(request.app[REDIS], identity.user, key)
    if found is not None:
        raise _reused(found[1])


def _reused(job_id: str) -> IdempotencyKeyReuse:
    return IdempotencyKeyReuse(
        f"this Idempotency-Key was used already, for job {job_id}: fetch that job, or send "
        "a new key for a new submission",
        details={"job_id": job_id},
    )


@routes.post(PREFIX + "/jobs")
async def submit(request: web.Request) -> web.Response:
    identity = caller(request)
    if not identity.may_submit_graphs:
        raise GraphsNotAllowed("submitting graphs needs a token with the graphs (or admin) scope")
    raw = await read_json(request)
    claims = claims_of(request, identity.user, raw)
    await _refuse_reused_key(request, identity)
    body = _submission(raw)
    settings = request.app[SETTINGS]
    check_raw_graph(body.workflow, settings.raw_graph_nodes)
    _check_labels(body.metadata or {})
    await check_budget(request, identity)
    await _check_assets(request, body.workflow, identity.user)
    job = Job(
        id=uuid.uuid4().hex,
        user=identity.user,
        workflow="raw",
        params={},
        graph=body.workflow,
        metadata=body.metadata or {},
        extra_data=body.extra_data or None,
    )
    quota = Quota(
        jobs=settings.max_concurrent_tasks_per_user, per_minute=settings.submissions_per_minute
    )
    run = queue_entry(job, expires=settings.job_ttl, weight=settings.weight(job.user))
    deadline = time.time() + WEB_WRITE_WINDOW
    try:
        await create(request.app, Submission(job, quota, run, claims, deadline))
    except DuplicateSubmission as duplicate:  # the same key, a moment earlier
        raise _reused(duplicate.job_id) from None
    answer = Presenter.of(request).job(job)
    return json_answer(answer, status=201, headers={"Location": answer.urls.self})


async def _shown(request: web.Request, job: Job) -> web.Response:
    (canceling,) = await cancel_requested(request.app[REDIS], job.id)
    return json_answer(Presenter.of(request).job(job, canceling=canceling))


@routes.get(PREFIX + "/jobs/{job_id}")
async def get_job(request: web.Request) -> web.Response:
    return await _shown(request, await owned_job(request, request.match_info["job_id"]))


@routes.post(PREFIX + "/jobs/{job_id}/cancel")
async def cancel_job(request: web.Request) -> web.Response:
    """Idempotent: a queued job is canceled at once, a running one is `canceling` until its
    worker stops it, a finished one stays as it is."""
    job = await owned_job(request, request.match_info["job_id"])
    if not job.is_final:
        job, _ = await cancel(request, job)
    return await _shown(request, job)


@routes.get(PREFIX + "/jobs/{job_id}/workflow")
async def get_workflow(request: web.Request) -> web.Response:
    """The API-format graph the job runs (a catalogue job's, with its params in place)."""
    job = await owned_job(request, request.match_info["job_id"])
    if job.graph is not None:
        graph = job.graph
    else:
        workflow = request.app[CATALOGUE].get_or_raise(job.workflow)
        graph = workflow.render(job.params, output_prefix=f"formy/{job.id}")
    return json_answer(V2Workflow(workflow=graph))


@routes.get(PREFIX + "/jobs/{job_id}/events")
async def job_events(request: web.Request) -> web.StreamResponse:
    job = await owned_job(request, request.match_info["job_id"])
    return await stream_v2_events(request, job)


_V2_TO_OURS: dict[str, str] = {
    "queued": "pending",
    "running": "processing",
    "canceling": "processing",
    "succeeded": "done",
    "failed": "failed",
    "canceled": "cancelled",
    "expired": "",  # a job past its retention is gone: none are listed
}


class _ListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(50, ge=1, le=100)
    cursor: float | None = Field(None, allow_inf_nan=False)
    status: str | None = None


def _list_query(request: web.Request) -> tuple[_ListQuery, dict[str, str], set[str] | None]:
    labels: dict[str, str] = {}
    plain: dict[str, str] = {}
    for name, value in request.query.items():
        if name.startswith("metadata[") and name.endswith("]"):
            labels[name[len("metadata[") : -1]] = value
        else:
            plain[name] = value
    try:
        query = _ListQuery.model_validate(plain)
    except ValidationError as exc:
        raise InvalidQuery(validation_summary(exc)) from None
    statuses = None
    if query.status:
        wanted = {s.strip() for s in query.status.split(",") if s.strip()}
        unknown = wanted - set(_V2_TO_OURS)
        if unknown:
            raise InvalidQuery(
                f"status: unknown {', '.join(sorted(unknown))}; use {', '.join(_V2_TO_OURS)}"
            )
        statuses = {_V2_TO_OURS[s] for s in wanted}
    return query, labels, statuses


@routes.get(PREFIX + "/jobs")
async def list_jobs(request: web.Request) -> web.Response:
    """The caller's jobs newest first (admins: everyone's); `?limit=` (1–100, default 50),
    `?cursor=` from the last page, `?status=` (v2 statuses, comma-separated) and
    `?metadata[key]=value` (labels that must all match)."""
    identity = caller(request)
    query, labels, statuses = _list_query(request)
    jobs, next_cursor = await request.app[STORE].page(
        user=None if identity.admin else identity.user,
        status=None,
        limit=query.limit,
        cursor=query.cursor,
        where=lambda job: (
            (statuses is None or job.status in statuses)
            and all(job.metadata.get(k) == v for k, v in labels.items())
        ),
    )
    canceling = await cancel_requested(request.app[REDIS], *(job.id for job in jobs))
    present = Presenter.of(request)
    shown = [
        present.job(job, canceling=c).model_dump(mode="json")
        for job, c in zip(jobs, canceling, strict=True)
    ]
    return web.json_response({"jobs": shown, "next_cursor": next_cursor})
