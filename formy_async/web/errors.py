"""Where errors become HTTP responses: `{"error": {"code", "message"}}`, never a traceback."""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..errors import FormyError, RangeNotSatisfiable, RedisUnavailable, TooManyRequests
from .v2.errors import v2_error, v2_http_code
from .v2.wire import PREFIX as V2_PREFIX

log = structlog.get_logger()


def validation_summary(exc: ValidationError) -> str:
    """Every problem pydantic found, as `where: what` joined by "; "."""
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())


def error_response(status: int, code: str, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message, **extra}}, status=status)


def formy_error_response(exc: FormyError, *, v2: bool = False) -> web.Response:
    """The error as our API answers it, or (`v2`) in Comfy API v2's envelope and codes."""
    headers = {}
    if isinstance(exc, TooManyRequests | RedisUnavailable):
        headers["Retry-After"] = str(exc.retry_after)
    elif isinstance(exc, RangeNotSatisfiable) and exc.size is not None:
        headers["Content-Range"] = f"bytes */{exc.size}"
    if v2:
        status, body = v2_error(exc)
        return web.json_response(body, status=status, headers=headers)
    return web.json_response({"error": exc.to_dict()}, status=exc.http_status, headers=headers)


def _is_v2(request: web.Request) -> bool:
    return request.path.startswith(V2_PREFIX + "/")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except FormyError as exc:
        return formy_error_response(exc, v2=_is_v2(request))
    except (RedisConnectionError, RedisTimeoutError) as exc:
        # the web's Redis client gives up fast (see connections): say so at once
        log.warning("redis_unavailable", method=request.method, path=request.path, error=str(exc))
        return formy_error_response(
            RedisUnavailable("the service's Redis does not answer; nothing was done: try again"),
            v2=_is_v2(request),
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
            exc.status, "http_error"
        )
        if _is_v2(request):
            code = v2_http_code(exc.status, code)
        response = error_response(
            exc.status,
            code,
            exc.reason if exc.status != 404 else f"no route for {request.method} {request.path}",
        )
        if "Allow" in exc.headers:  # a 405 says which methods the route takes (RFC 9110)
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        log.exception("unhandled_error", method=request.method, path=request.path)
        return error_response(500, "internal_error", "the server failed to handle this request")
