"""`POST /api/jobs`: a submission validated, limited, stored with its first event, and enqueued."""

from __future__ import annotations

import json
import uuid
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from .. import keys
from ..errors import BadRequest, Forbidden, InvalidParams
from ..jobstore import Quota
from ..models import Job, JobView, SubmitJob, Submitted
from ..queue import queue_entry
from ..webhooks import check_webhook_url
from ..workflows import Workflow, check_raw_graph
from .catalog import MODELS
from .context import CATALOGUE, REDIS, SETTINGS, STORE
from .errors import validation_summary
from .security import caller, signer

routes = web.RouteTableDef()

MAX_JSON_DEPTH = 20


async def read_json(request: web.Request) -> Any:
    """The body as JSON (the app bounds its size); nesting deeper than MAX_JSON_DEPTH refused."""
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}", code="malformed_json") from None
    if _depth(body) > MAX_JSON_DEPTH:
        raise BadRequest(
            f"the JSON is nested more than {MAX_JSON_DEPTH} levels deep", code="json_too_deep"
        )
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
        raise BadRequest(
            'the body must be {"workflow": name, "params": {...}} or {"graph": {...}}: '
            + validation_summary(exc),
            code="invalid_body",
        ) from None
    settings = request.app[SETTINGS]
    if body.time_limit is not None and body.time_limit > settings.job_timeout:
        raise InvalidParams(
            f"time_limit may be at most {settings.job_timeout:g} seconds", code="invalid_body"
        )
    if body.priority == "high" and not (
        identity.admin or identity.user in settings.high_priority_users
    ):
        raise Forbidden("this user may not submit high priority jobs", code="priority_not_allowed")
    job = await _job_from(request, body, identity.user, identity.admin)
    job.priority = body.priority
    if body.webhook_url is not None:
        if not settings.webhook_secret:
            raise InvalidParams(
                "webhooks are off: the service has no FORMY_WEBHOOK_SECRET",
                code="webhooks_not_configured",
            )
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
    view = JobView.of(job, signer(request.app))
    return web.Response(
        text=view.model_dump_json(),
        status=202,
        content_type="application/json",
        headers={"Location": view.links["self"]},
    )


async def _job_from(request: web.Request, body: SubmitJob, user: str, admin: bool) -> Job:
    job_id = uuid.uuid4().hex
    if body.graph is not None:
        if not admin:
            raise Forbidden("raw graphs need a token with the admin scope", code="admin_required")
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
    """Uploads the params name are the caller's; models they name are on the ComfyUI backend."""
    redis = request.app[REDIS]
    for param in workflow.image_params():
        upload_id = params.get(param)
        if upload_id is None:
            continue
        raw = await redis.get(keys.upload(upload_id))
        if raw is None or json.loads(raw).get("user", "") != user:
            raise InvalidParams(
                f"{param}: no upload with id {upload_id!r} (it may have expired)",
                code="upload_not_found",
                details=[{"param": param, "type": "upload_not_found"}],
            )
    await request.app[MODELS].check(workflow, params)
