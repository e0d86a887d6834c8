"""Who may call: bearer tokens, signed URLs for `<img src>`, per-user limits, allowed origins."""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler

from ..auth import Identity, bearer, check_signed, sign_url
from ..errors import AdminRequired, JobNotFound, OriginNotAllowed, SignatureInvalid, TokenMissing
from ..models import AdminJobView, Job, JobView
from .context import IDENTITY, SETTINGS, SIGNED, STORE, TOKENS

#: GET routes an `<img src>` reaches: a valid signature stands in for the bearer token
_SIGNABLE = re.compile(
    r"^/api/(jobs/[^/]+/(outputs/[^/]+|preview)|uploads/[^/]+|v2/assets/[^/]+/content)$"
)
#: the API's OpenAPI description: public, as documentation is
PUBLIC_DESCRIPTION = "/api/openapi.json"
#: the GET route a browser's EventSource opens: its token may come as `?token=`, as the
#: WebSocket's does
_STREAMABLE = re.compile(r"^/api/(v2/)?jobs/[^/]+/events$")


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every `/api/*` request carries a valid token (or, for images, a valid signature)."""
    if not request.path.startswith("/api/") or request.method == "OPTIONS":
        return await handler(request)
    if request.path == PUBLIC_DESCRIPTION:
        return await handler(request)
    secret = request.app[SETTINGS].secret_key
    if "sig" in request.query and request.method == "GET" and _SIGNABLE.match(request.path):
        if not check_signed(
            secret, request.path, request.query.get("exp", ""), request.query["sig"]
        ):
            raise SignatureInvalid("the signed URL is invalid or has expired")
        request[SIGNED] = True
        return await handler(request)
    token = bearer(request.headers.get("Authorization"))
    if not token and _STREAMABLE.match(request.path) and "token" in request.query:
        token = request.query["token"]  # an EventSource cannot send headers
    request[IDENTITY] = request.app[TOKENS](token)
    return await handler(request)


def caller(request: web.Request) -> Identity:
    identity: Identity | None = request.get(IDENTITY)
    if identity is None:
        raise TokenMissing("a bearer token is required")
    return identity


def require_admin(request: web.Request) -> Identity:
    identity = caller(request)
    if not identity.admin:
        raise AdminRequired("this needs a token with the admin scope")
    return identity


def may_see(request: web.Request, owner: str) -> bool:
    if request.get(SIGNED):
        return True  # the signature was issued for this very path, to its owner
    identity = caller(request)
    return identity.admin or identity.user == owner


async def owned_job(request: web.Request, job_id: str) -> Job:
    """The job, if the caller may see it; another user's job is as unknown as a missing one."""
    job = await request.app[STORE].get(job_id)
    if not may_see(request, job.user):
        raise JobNotFound(f"no job with id {job_id!r}")
    return job


def view_of(request: web.Request, job: Job) -> JobView:
    """The job as the caller may see it (admins see more), its output URLs signed."""
    identity = request.get(IDENTITY)
    view = AdminJobView if identity is not None and identity.admin else JobView
    return view.of(job, signer(request.app))


def signer(app: web.Application) -> Callable[[str], str]:
    settings = app[SETTINGS]
    return lambda path: sign_url(settings.secret_key, path, settings.signed_url_ttl)


def origin_allowed(request: web.Request) -> bool:
    """No Origin (not a browser), the server's own, or one configured in FORMY_CORS_ORIGINS."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    if origin in request.app[SETTINGS].cors_origins:
        return True
    return urlsplit(origin).netloc.lower() == (request.host or "").lower()


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """CORS for the configured origins only; any other origin gets no CORS headers."""
    origin = request.headers.get("Origin")
    allowed = origin is not None and origin in request.app[SETTINGS].cors_origins
    if request.method == "OPTIONS" and request.path.startswith("/api/"):
        if not allowed:
            raise OriginNotAllowed("this origin may not call the API")
        response: web.StreamResponse = web.Response(status=204)
    else:
        response = await handler(request)
    if allowed and origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"
        response.headers["Access-Control-Expose-Headers"] = "Location, Idempotent-Replayed"
        if request.method == "OPTIONS":
            response.headers["Access-Control-Allow-Methods"] = "GET, HEAD, POST, DELETE, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = (
                "Authorization, Content-Type, Idempotency-Key, Last-Event-ID"
            )
            response.headers["Access-Control-Max-Age"] = "600"
    return response
