"""The routes of the OpenAPI description: each operation, its parameters and its answers."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..models import MAX_SEQ
from ..workflows import Catalogue

REF = "#/components/schemas/{model}"
DESCRIPTIONS = {
    400: "The request is malformed",
    401: "No usable token (or an altered or expired signed URL)",
    403: "Not allowed for this caller",
    404: "Unknown (or another user's)",
    405: "The route does not take this method",
    408: "The headers or the body came too slowly",
    409: "The job already ended",
    410: "Past its retention time",
    413: "Too large",
    415: "Not a PNG, JPEG or WEBP image",
    416: "A byte range outside the file",
    422: "Params, uploads, models, URLs or keys that cannot be used",
    429: "Over a per-user limit (see Retry-After)",
    500: "A bug on the server's side",
    502: "ComfyUI failed",
    503: "Redis, storage or ComfyUI does not answer: try again (see Retry-After)",
}
#: what any request may be answered (no token, too slow, a bug, Redis down)
ANY = (400, 401, 408, 500, 503)
PUBLIC: list[dict[str, list[str]]] = []  # `security` of a route that needs no token


def ref(model: str) -> dict[str, str]:
    return {"$ref": REF.format(model=model)}


def json_answer(model: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": ref(model)}}}


def any_json(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {}}}}


def binary(description: str, media: str = "*/*") -> dict[str, Any]:
    schema = {"type": "string", "format": "binary"}
    return {"description": description, "content": {media: {"schema": schema}}}


def answers(ok: dict[int, dict[str, Any]], errors: Iterable[int] = ()) -> dict[str, Any]:
    found: dict[str, Any] = {str(status): body for status, body in ok.items()}
    for status in sorted({*errors, *ANY}):
        found[str(status)] = json_answer(f"Error{status}", DESCRIPTIONS[status])
    return found


def path_param(name: str, description: str) -> dict[str, Any]:
    schema = {"type": "string", "minLength": 1}
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema,
    }


def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


JOB_ID = path_param("job_id", "the job's id")
#: a signed URL (`?exp=…&sig=…`) stands in for the token on the routes an `<img src>` reaches
SIGNED = [
    query("exp", {"type": "string"}, "a signed URL's expiry"),
    query("sig", {"type": "string"}, "a signed URL's signature"),
]
SIGNED_OR_BEARER: list[dict[str, list[str]]] = [{"bearer": []}, {"signed_url": []}]
SEQ = {"type": "integer", "minimum": 0, "maximum": MAX_SEQ}
#: a position in the newest-first order: a finite number, as `next_cursor` gives it
CURSOR = {"type": "string", "pattern": r"^-?[0-9]{1,20}(\.[0-9]{1,20})?$"}


def _submit() -> dict[str, Any]:
    return {
        "post": {
            "summary": "Submit a job",
            "description": "Params are validated before anything is queued. With "
            "`Idempotency-Key`, a repeat of the same body (within FORMY_IDEMPOTENCY_TTL) "
            "answers the job the key created, with `Idempotent-Replayed: true`; another body "
            'is `422 idempotency_key_reuse`. With `"reuse": true`, an identical finished job\'s '
            "outputs finish the job at once (`reused_from`), and a running one is followed.",
            "parameters": [
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                }
            ],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": ref("SubmitRequest")}},
            },
            "responses": answers(
                {202: json_answer("JobView", "The job (also when replayed: see the headers)")},
                (403, 404, 413, 422, 429),
            ),
        },
        "get": {
            "summary": "List jobs, newest first",
            "parameters": [
                query(
                    "status", {"enum": ["pending", "processing", "done", "failed", "cancelled"]}, ""
                ),
                query("limit", {"type": "integer", "minimum": 1, "maximum": 100}, "page size"),
                query("cursor", CURSOR, "`next_cursor` of the page before"),
            ],
            "responses": answers({200: json_answer("JobPage", "A page of jobs")}),
        },
    }


def _events() -> dict[str, Any]:
    stream = {
        "type": "string",
        "description": "Server-Sent Events: `id: <seq>`, `event: <type>`, `data: <event JSON>` "
        "per event, `: keep-alive` comments every FORMY_SSE_HEARTBEAT seconds; it ends after "
        "the final event. Resume with `Last-Event-ID` (an EventSource does it by itself).",
    }
    return {
        "get": {
            "summary": "A job's events: its log as JSON, or a live stream",
            "description": "With `Accept: text/event-stream` the events after `after` (or "
            "`Last-Event-ID`) are streamed, then live ones until the final one; a finished "
            "job with nothing after them answers 204 (an EventSource stops reconnecting). The "
            "token may come as `?token=`: an EventSource cannot send headers.",
            "parameters": [
                JOB_ID,
                query("after", SEQ, "the last seq seen (default 0)"),
                {"name": "Last-Event-ID", "in": "header", "required": False, "schema": SEQ},
                query("token", {"type": "string"}, "the token, for an EventSource"),
            ],
            "security": [{"bearer": []}, {"query_token": []}],
            "responses": answers(
                {
                    200: {
                        "description": "The events after `after`, in seq order",
                        "content": {
                            "application/json": {
                                "schema": {"type": "array", "items": ref("Event")}
                            },
                            "text/event-stream": {"schema": stream},
                        },
                    },
                    204: {"description": "A finished job has no event after that seq"},
                },
                (404,),
            ),
        }
    }


def _websocket() -> dict[str, Any]:
    return {
        "get": {
            "summary": "The WebSocket: subscribe to jobs' events",
            "description": "Upgrade to a WebSocket (`?token=`, the Authorization header, or a "
            'first `{"type": "auth"}` message). Client messages: `Subscribe`, `Unsubscribe`, '
            '`Authenticate`. The server sends `{"type": "subscribed"}`, every `Event` after '
            "`after`, then live ones, each once and in order; `overflow` (resubscribe from "
            '`last_seq`) and `{"type": "error"}` (`bad_message`, `job_not_found`, '
            "`internal_error`, `redis_unavailable`). Close code 4401: the token is missing, "
            "invalid or expired.",
            "security": [{"bearer": []}, {"query_token": []}, {}],
            "x-websocket": {
                "client": [ref("Subscribe"), ref("Unsubscribe"), ref("Authenticate")],
                "server": [ref("Event")],
            },
            "responses": {
                "101": {"description": "Switching to the WebSocket protocol"},
                **answers({}, (400, 403)),
            },
        }
    }


def _job_routes() -> dict[str, Any]:
    job = {200: json_answer("JobView", "The job")}
    return {
        "/api/jobs/{job_id}": {
            "get": {"summary": "A job", "parameters": [JOB_ID], "responses": answers(job, (404,))}
        },
        "/api/jobs/{job_id}/cancel": {
            "post": {
                "summary": "Cancel a job",
                "parameters": [JOB_ID],
                "responses": answers(
                    {**job, 202: json_answer("JobView", "A running job: its cancel follows")},
                    (404, 409),
                ),
            }
        },
        "/api/jobs/{job_id}/events": _events(),
        "/api/jobs/{job_id}/outputs/{filename}": {
            "get": {
                "summary": "An output's bytes (byte ranges too)",
                "parameters": [JOB_ID, path_param("filename", "the output's filename"), *SIGNED],
                "security": SIGNED_OR_BEARER,
                "responses": answers(
                    {200: binary("The file"), 206: binary("A byte range of it")},
                    (404, 410, 416),
                ),
            }
        },
        "/api/jobs/{job_id}/preview": {
            "get": {
                "summary": "The latest live preview of a running job",
                "parameters": [JOB_ID, *SIGNED],
                "security": SIGNED_OR_BEARER,
                "responses": answers({200: binary("The preview image", "image/*")}, (404,)),
            }
        },
    }


def _uploads() -> dict[str, Any]:
    form = {
        "type": "object",
        "required": ["file"],
        "description": "other fields are ignored",
        "propertyNames": {"pattern": "^[A-Za-z0-9_.-]{1,64}$"},
        "properties": {"file": {"type": "string", "format": "binary", "minLength": 1}},
    }
    return {
        "/api/uploads": {
            "post": {
                "summary": "Store an input image (PNG, JPEG, WEBP)",
                "requestBody": {
                    "required": True,
                    "content": {"multipart/form-data": {"schema": form}},
                },
                "responses": answers(
                    {201: json_answer("UploadView", "The upload")}, (413, 415, 422)
                ),
            }
        },
        "/api/uploads/{upload_id}": {
            "get": {
                "summary": "A stored input image (byte ranges too)",
                "parameters": [path_param("upload_id", "the upload's id"), *SIGNED],
                "security": SIGNED_OR_BEARER,
                "responses": answers(
                    {200: binary("The image", "image/*"), 206: binary("A byte range of it")},
                    (404, 416),
                ),
            }
        },
    }


def _catalogue(catalogue: Catalogue) -> dict[str, Any]:
    names = {"type": "string", "enum": sorted(catalogue)}
    described = {"description": "A workflow with the JSON Schema of its params"}
    return {
        "/api/workflows": {
            "get": {
                "summary": "The workflows",
                "responses": answers({200: any_json("The catalogue")}),
            }
        },
        "/api/workflows/{name}": {
            "get": {
                "summary": "One workflow, its version, and the models it loads with who has them",
                "parameters": [{**path_param("name", "the workflow"), "schema": names}],
                "responses": answers({200: {**any_json(""), **described}}, (404,)),
            }
        },
        "/api/models": {
            "get": {
                "summary": "The models ComfyUI has, by folder",
                "responses": answers({200: any_json("Model names by folder")}, (502,)),
            }
        },
    }


def _usage() -> dict[str, Any]:
    user = {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$"}
    return {
        "get": {
            "summary": "Jobs, GPU-seconds and queue wait by UTC day, today first",
            "description": "The caller's own; admins see every user's and per backend, or one "
            "user's with `user`. A job counts on the day it ended, once it ran on ComfyUI.",
            "parameters": [
                query("days", {"type": "integer", "minimum": 1, "maximum": 31}, "default 7"),
                query("user", user, "(admins) one user's usage"),
            ],
            "responses": answers({200: json_answer("Usage", "The totals")}, (403,)),
        }
    }


def _service() -> dict[str, Any]:
    text = {"description": "", "content": {"text/plain": {"schema": {"type": "string"}}}}
    return {
        "/api/stats": {
            "get": {
                "summary": "(admin) Jobs and workers",
                "responses": answers({200: any_json("")}, (403,)),
            }
        },
        "/api/backends": {
            "get": {
                "summary": "(admin) ComfyUI servers",
                "responses": answers({200: any_json("")}, (403,)),
            }
        },
        "/api/usage": _usage(),
        "/api/openapi.json": {
            "get": {
                "summary": "This description",
                "security": PUBLIC,
                "responses": answers({200: any_json("")}),
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics (FORMY_METRICS_TOKEN as bearer, if set)",
                "security": [{"bearer": []}, {}],
                "responses": answers({200: {**text, "description": "Prometheus text"}}),
            }
        },
        "/healthz": {
            "get": {
                "summary": "Liveness",
                "security": PUBLIC,
                "responses": answers({200: any_json("")}),
            }
        },
        "/readyz": {
            "get": {
                "summary": "Readiness: Redis and ComfyUI answer",
                "security": PUBLIC,
                "responses": {
                    **answers({200: any_json("Ready")}),
                    "503": any_json("Redis or every ComfyUI backend does not answer"),
                },
            }
        },
        "/": {
            "get": {
                "summary": "The browser page",
                "security": PUBLIC,
                "responses": answers({200: binary("The page", "text/html")}),
            }
        },
        "/static/{filename}": {
            "get": {
                "summary": "The page's files",
                "security": PUBLIC,
                "parameters": [path_param("filename", "a file of the page")],
                "responses": {
                    "200": binary("The file"),
                    "403": {"description": "Outside the page's folder"},
                    "404": {"description": "No such file"},
                    **answers({}),
                },
            }
        },
    }


def paths(catalogue: Catalogue) -> dict[str, Any]:
    """Every route of the app."""
    return {
        "/api/jobs": _submit(),
        **_job_routes(),
        **_uploads(),
        **_catalogue(catalogue),
        **_service(),
        "/ws": _websocket(),
    }
