"""Where errors become HTTP responses: `{"error": {"code", "message"}}`, never a traceback."""

from __future__ import annotations

from typing import Any

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from pydantic import ValidationError

from ..errors import FormyError, RangeNotSatisfiable, TooManyRequests

log = structlog.get_logger()


def validation_summary(exc: ValidationError) -> str:
    """Every problem pydantic found, as `where: what` joined by "; "."""
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())


def error_response(status: int, code: str, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message, **extra}}, status=status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except FormyError as exc:
        headers = {}
        if isinstance(exc, TooManyRequests):
            headers["Retry-After"] = str(exc.retry_after)
        elif isinstance(exc, RangeNotSatisfiable) and exc.size is not None:
            headers["Content-Range"] = f"bytes */{exc.size}"
        return web.json_response({"error": exc.to_dict()}, status=exc.http_status, headers=headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
            exc.status, "http_error"
        )
        return error_response(
            exc.status,
            code,
            exc.reason if exc.status != 404 else f"no route for {request.method} {request.path}",
        )
    except Exception:
        log.exception("unhandled_error", method=request.method, path=request.path)
        return error_response(500, "internal_error", "the server failed to handle this request")
