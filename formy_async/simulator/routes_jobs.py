"""The /api/jobs routes of newer ComfyUI: list, one job, cancel one, cancel a batch."""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from . import jobs
from .nodes import JsonDict
from .state import SIMULATOR, Simulator


def _bad(message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=400)


def _all_jobs(sim: Simulator, statuses: list[str], workflow_id: str | None) -> list[JsonDict]:
    queue = sim.queue
    found: list[JsonDict] = []
    if jobs.IN_PROGRESS in statuses:
        found += [jobs.job_from_queue_item(i, jobs.IN_PROGRESS) for i in queue.running_items()]
    if jobs.PENDING in statuses:
        found += [jobs.job_from_queue_item(i, jobs.PENDING) for i in queue.pending()]
    wanted = jobs.FINISHED_STATUSES.intersection(statuses)
    if wanted:
        for prompt_id, entry in queue.get_history().items():
            job = jobs.job_from_history(prompt_id, entry, with_outputs=False)
            if job["status"] in wanted:
                found.append(job)
    if workflow_id:
        found = [job for job in found if job.get("workflow_id") == workflow_id]
    return found


def _list_query(query: Mapping[str, str]) -> tuple[JsonDict, web.Response | None]:
    """The listing's parameters, or the 400 ComfyUI answers for the first bad one."""
    statuses = list(jobs.JOB_STATUSES)
    if query.get("status"):
        statuses = [s.strip().lower() for s in query["status"].split(",") if s.strip()]
        invalid = [s for s in statuses if s not in jobs.JOB_STATUSES]
        if invalid:
            valid = ", ".join(jobs.JOB_STATUSES)
            return {}, _bad(f"Invalid status value(s): {', '.join(invalid)}. Valid values: {valid}")
    sort_by = query.get("sort_by", "created_at").lower()
    sort_order = query.get("sort_order", "desc").lower()
    if sort_by not in ("created_at", "execution_duration"):
        return {}, _bad("sort_by must be 'created_at' or 'execution_duration'")
    if sort_order not in ("asc", "desc"):
        return {}, _bad("sort_order must be 'asc' or 'desc'")
    limit: int | None = None
    if "limit" in query:
        try:
            limit = int(query["limit"])
        except ValueError:
            return {}, _bad("limit must be an integer")
        if limit <= 0:
            return {}, _bad("limit must be a positive integer")
    try:
        offset = max(0, int(query.get("offset", "0")))
    except ValueError:
        return {}, _bad("offset must be an integer")
    args = {"statuses": statuses, "sort_by": sort_by, "descending": sort_order == "desc"}
    return {**args, "limit": limit, "offset": offset}, None


async def list_jobs(request: web.Request) -> web.Response:
    args, error = _list_query(request.query)
    if error is not None:
        return error
    found = _all_jobs(request.app[SIMULATOR], args["statuses"], request.query.get("workflow_id"))
    found = jobs.sort_jobs(found, args["sort_by"], args["descending"])
    total, offset, limit = len(found), args["offset"], args["limit"]
    page = found[offset:]
    page = page if limit is None else page[:limit]
    pagination = {"offset": offset, "limit": limit, "total": total}
    has_more = offset + len(page) < total
    return web.json_response({"jobs": page, "pagination": {**pagination, "has_more": has_more}})


def find_job(sim: Simulator, job_id: str) -> JsonDict | None:
    """From history (with outputs and workflow) if finished, else the running or a pending one."""
    queue = sim.queue
    if job_id in queue.history:
        return jobs.job_from_history(job_id, copy.deepcopy(queue.history[job_id]), True)
    workflow = sim.config.profile.job_detail_has_workflow
    for item in queue.running_items():
        if item[1] == job_id:
            return jobs.job_from_queue_item(item, jobs.IN_PROGRESS, workflow)
    for item in queue.pending():
        if item[1] == job_id:
            return jobs.job_from_queue_item(item, jobs.PENDING, workflow)
    return None


async def get_job(request: web.Request) -> web.Response:
    job = find_job(request.app[SIMULATOR], request.match_info["job_id"])
    if job is None:
        return web.json_response({"error": "Job not found"}, status=404)
    return web.json_response(job)


def cancel(sim: Simulator, job_id: str) -> bool:
    """Interrupt it if it is the running prompt right now, else dequeue it; finished or unknown
    ids are a no-op. The check and the interrupt happen in one step, so a cancel cannot land on
    a prompt that started in between (ComfyUI's interrupt_if_running)."""
    running = sim.queue.running
    if running is not None and running.prompt_id == job_id:
        sim.engine.interrupt()
        return True
    return sim.queue.delete(job_id)


async def cancel_job(request: web.Request) -> web.Response:
    return web.json_response(
        {"cancelled": cancel(request.app[SIMULATOR], request.match_info["job_id"])}
    )


async def cancel_jobs(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except json.JSONDecodeError:
        return _bad("Request body must be valid JSON")
    job_ids = body.get("job_ids") if isinstance(body, dict) else None
    if not isinstance(job_ids, list):
        return _bad("job_ids must be a list")
    # Every id is checked before anything is cancelled; a bad one fails the whole batch.
    invalid = [
        j if isinstance(j, str) else repr(j) for j in job_ids if not jobs.is_canonical_uuid(j)
    ]
    if invalid:
        return _bad("job_ids contains invalid id(s)", invalid_ids=invalid)
    sim = request.app[SIMULATOR]
    results = [cancel(sim, job_id) for job_id in job_ids]
    return web.json_response({"cancelled": any(results)})


# Registered under /api in ComfyUI's own route table, so they also get the /api/api twin and
# there is no unprefixed /jobs.
JOB_ROUTES: tuple[tuple[str, str, Any], ...] = (
    ("GET", "/api/jobs", list_jobs),
    ("GET", "/api/jobs/{job_id}", get_job),
    ("POST", "/api/jobs/{job_id}/cancel", cancel_job),
    ("POST", "/api/jobs/cancel", cancel_jobs),
)
