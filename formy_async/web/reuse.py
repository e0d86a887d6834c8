"""Result reuse: a request's fingerprint, and a reusable job stored as a hit, follower or leader.

A request is the same as another when its workflow (its manifest and graph as loaded), its
resolved params (the seed included, so a random seed never matches, and the model names), and
the contents of its input images (by SHA-256) are. A same request of the same user (of any
user with FORMY_REUSE_ACROSS_USERS) that finished `done`, with its files still stored, makes
the new job finish at once with those outputs (not copied: `reused_from` names the job whose
files they are); one that still runs is followed, and its end settles the followers.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from typing import Any

import structlog
from aiohttp import web

from ..errors import FileNotFound, JobNotFound
from ..models import Job, Submitted
from ..storage import input_key, output_key
from ..store.claims import Claims, LeaderChanged
from ..store.jobs import Quota
from ..store.queue import OFFSET_MS, QueueEntry
from ..store.reuse import deferred, leader_key
from ..workflows import Workflow
from .context import FOLLOWERS, LIFECYCLE, QUEUE, REUSE, SETTINGS, STORAGE, STORE, UPLOADS
from .security import signer

log = structlog.get_logger()

#: how often a submission decides again when another one changed the leader meanwhile
DECISIONS = 3


@dataclass(frozen=True)
class Submission:
    """A validated job ready to be stored, what it may use, and what it claims."""

    job: Job
    quota: Quota
    run: QueueEntry
    claims: Claims | None
    deadline: float


async def fingerprint(app: web.Application, workflow: Workflow, params: dict[str, Any]) -> str:
    """What identifies the request for reuse (see the module's docstring)."""
    contents = dict(params)
    for param in workflow.image_params():
        if params.get(param):
            contents[param] = "sha256:" + await _input_hash(app, params[param])
    text = json.dumps(
        {
            "workflow": workflow.name,
            "definition": workflow.digest,
            "params": contents,
        },
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()


async def _input_hash(app: web.Application, upload_id: str) -> str:
    upload = await app[UPLOADS].get(upload_id)
    if upload is not None and upload.sha256:
        return upload.sha256
    return hashlib.sha256(await app[STORAGE].read(input_key(upload_id))).hexdigest()


async def store_reusable(request: web.Request, sub: Submission, fp: str) -> None:
    """Store the job as a hit (finished now), a follower, or the leader of its request."""
    app = request.app
    scope = "*" if app[SETTINGS].reuse_across_users else sub.job.user
    key = leader_key(scope, fp)
    base = sub.claims or Claims(user=sub.job.user)
    for _ in range(DECISIONS):
        leader_id = await app[REUSE].leader(key) or ""
        leader = await _usable_leader(app, leader_id)
        try:
            if leader is not None and leader.status == "done":
                await _store_hit(app, sub, leader)
            elif leader is not None:
                claims = replace(base, reuse_key=key, reuse_mode="follow", expected=leader.id)
                await create(app, replace(sub, run=deferred(sub.run), claims=claims))
                await app[FOLLOWERS].watch(leader.id)
                log.info("job_follows", job_id=sub.job.id, leader=leader.id)
            else:
                claims = replace(base, reuse_key=key, reuse_mode="lead", expected=leader_id)
                await create(app, replace(sub, claims=claims))
            return
        except LeaderChanged:
            continue
    await create(app, sub)  # identical requests keep racing: this one simply runs


async def _usable_leader(app: web.Application, leader_id: str) -> Job | None:
    """The leader if it runs, or finished done with its files still stored; else None."""
    if not leader_id:
        return None
    try:
        leader = await app[STORE].get(leader_id)
    except JobNotFound:
        return None
    if not leader.is_final:
        return leader
    if leader.status != "done":
        return None
    try:
        for output in leader.outputs:
            await app[STORAGE].size(output_key(leader.files_of, output.filename))
    except FileNotFound:
        return None  # past its retention: run again
    return leader


async def create(app: web.Application, stored: Submission) -> None:
    """Store (and queue) the submission's job, with what it claims."""
    job = stored.job
    await app[STORE].create(
        job,
        Submitted(job_id=job.id, workflow=job.workflow),
        stored.quota,
        stored.run,
        deadline=stored.deadline,
        claiming=stored.claims,
    )


async def _store_hit(app: web.Application, sub: Submission, leader: Job) -> None:
    """Store the job, with no run (it takes no ComfyUI slot, so no share of the user's jobs),
    and finish it with the leader's outputs."""
    free = replace(sub.quota, jobs=None)
    await create(app, replace(sub, quota=free, run=QueueEntry()))
    await finish_from(app, sub.job, leader)
    log.info("job_reused", job_id=sub.job.id, reused_from=sub.job.reused_from)


async def finish_from(app: web.Application, job: Job, leader: Job) -> bool:
    """Finish `job` done with `leader`'s outputs (their files stay where they are)."""
    job.reused_from = leader.files_of
    job.outputs = [
        o.model_copy(update={"url": f"/api/jobs/{job.id}/outputs/{o.filename}"})
        for o in leader.outputs
    ]
    sign = signer(app)
    shown = [o.model_copy(update={"url": sign(o.url)}) for o in job.outputs]
    finished = await app[LIFECYCLE].done(job, shown=shown, texts=leader.texts) > 0
    if finished:
        await app[QUEUE].enqueue_webhook(job)
    return finished


async def settle_followers(app: web.Application, leader_id: str) -> None:
    """Once the leader is final: finish its followers with its outputs, or (it did not end
    done) let each run by itself. Each follower is settled by one caller only."""
    leader = await _usable_leader(app, leader_id)
    if leader is not None and not leader.is_final:
        return
    for follower_id in await app[REUSE].take_followers(leader_id):
        try:
            follower = await app[STORE].get(follower_id)
        except JobNotFound:
            continue
        if follower.is_final:  # cancelled by its owner meanwhile
            await app[REUSE].drop_run(follower_id)
        elif leader is not None and await finish_from(app, follower, leader):
            await app[REUSE].drop_run(follower_id)
            log.info("job_reused", job_id=follower_id, reused_from=follower.reused_from)
        else:
            await _release(app, follower)


async def _release(app: web.Application, follower: Job) -> None:
    offset = OFFSET_MS.get(follower.priority, 0)
    if not await app[REUSE].release_run(follower.id, priority_offset_ms=offset):
        await app[QUEUE].hand_back(follower, expires=app[SETTINGS].job_ttl)
    log.info("job_runs_itself", job_id=follower.id, reason="its leader did not finish done")
