"""Idempotent submissions: the `Idempotency-Key` header, and the answer a repeated one gets."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from ..errors import IdempotencyKeyInvalid, IdempotencyKeyReuse
from ..store.claims import Claims, digest, submitted_with
from .context import REDIS, SETTINGS, STORE
from .security import view_of

HEADER = "Idempotency-Key"
#: on the answer to a repeated submission: the job is the one the key created before
REPLAYED = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255


def claims_of(request: web.Request, user: str, body: Any) -> Claims | None:
    """The request's Idempotency-Key as the job store claims it, or None without one.

    Bodies are compared as JSON values (key order and spacing do not matter).
    """
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_KEY_LENGTH:
        raise IdempotencyKeyInvalid(f"{HEADER} must be 1 to {MAX_KEY_LENGTH} characters long")
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return Claims(
        user=user,
        idempotency_key=key,
        body_digest=digest(canonical),
        idempotency_ttl=request.app[SETTINGS].idempotency_ttl,
    )


async def earlier_answer(request: web.Request, claims: Claims | None) -> web.Response | None:
    """The answer to a key seen before (looked up before any work: a URL input is not fetched
    twice); None when the key is new. The job store checks again, atomically, when it creates."""
    if claims is None or claims.idempotency_key is None:
        return None
    found = await submitted_with(request.app[REDIS], claims.user, claims.idempotency_key)
    if found is None:
        return None
    body, job_id = found
    if body != claims.body_digest:
        raise IdempotencyKeyReuse(
            "this Idempotency-Key was already used with another body: "
            "send a new key for a new submission"
        )
    return await replayed(request, job_id)


async def replayed(request: web.Request, job_id: str) -> web.Response:
    """The job a key created, answered as its submission was (202), marked as a replay."""
    view = view_of(request, await request.app[STORE].get(job_id))
    return web.Response(
        text=view.model_dump_json(),
        status=202,
        content_type="application/json",
        headers={"Location": view.links["self"], REPLAYED: "true"},
    )
