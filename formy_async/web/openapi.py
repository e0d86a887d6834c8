"""`GET /api/openapi.json`: the API as OpenAPI 3.1, made from the models the server uses.

The bodies and answers are the pydantic models' own JSON Schemas; each workflow's params are
its params model's schema (an image param takes an upload id or a URL); each error status
lists the codes it may carry, from the error classes; the WebSocket and the event stream are
described with the messages they carry.
"""

from __future__ import annotations

import copy
from typing import Any

from aiohttp import web
from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import models_json_schema

from .. import errors
from ..models import (
    AdminJobView,
    Authenticate,
    Event,
    JobView,
    OutputFile,
    SubmitJob,
    Subscribe,
    Unsubscribe,
    Usage,
)
from ..workflows import Catalogue
from .context import CATALOGUE
from .openapi_paths import REF, paths

routes = web.RouteTableDef()

#: codes the web layer answers by hand (web/errors.py), beside the error classes'
_BY_HAND = {
    400: {"http_error"},  # aiohttp's own refusals (a GET /ws that is no upgrade)
    404: {"not_found"},
    405: {"method_not_allowed"},
    413: {"payload_too_large"},
}


class UploadView(BaseModel):
    """An upload as `POST /api/uploads` answers it (its `url` is signed)."""

    id: str
    format: str
    content_type: str
    width: int
    height: int
    size: int
    created_at: float
    url: str


class JobPage(BaseModel):
    jobs: list[AdminJobView | JobView]
    next_cursor: str | None


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorBody(BaseModel):
    error: ErrorDetail


def codes_by_status() -> dict[int, list[str]]:
    """Every code the API may answer, by HTTP status (a job's own failure codes excluded)."""
    found: dict[int, set[str]] = {s: set(c) for s, c in _BY_HAND.items()}
    pending: list[type[errors.FormyError]] = list(errors.FormyError.__subclasses__())
    while pending:
        cls = pending.pop()
        pending += cls.__subclasses__()
        if cls in (errors.FormyAPIError, errors.FormyConnectionError) or issubclass(
            cls, errors.JobFault
        ):
            continue
        found.setdefault(cls.http_status, set()).add(cls.code)
    found.setdefault(500, set()).add("internal_error")
    return {status: sorted(codes) for status, codes in sorted(found.items())}


def _model_schemas() -> dict[str, Any]:
    models: list[type[BaseModel]] = [
        JobView,
        AdminJobView,
        SubmitJob,
        UploadView,
        JobPage,
        ErrorBody,
        OutputFile,
        Subscribe,
        Unsubscribe,
        Authenticate,
        Usage,
    ]
    _, schema = models_json_schema([(m, "serialization") for m in models], ref_template=REF)
    defs: dict[str, Any] = schema["$defs"]
    defs["Event"] = TypeAdapter(Event).json_schema(ref_template=REF, mode="serialization")
    for name, sub in defs["Event"].pop("$defs", {}).items():
        defs.setdefault(name, sub)
    for status, codes in codes_by_status().items():
        defs[f"Error{status}"] = {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": {"enum": codes},
                        "message": {"type": "string"},
                        "details": {},
                    },
                }
            },
        }
    return defs


def _workflow_schemas(catalogue: Catalogue) -> dict[str, Any]:
    """`Params_<name>` for each workflow; image params take an upload id or a URL."""
    found = {}
    for name, workflow in catalogue.items():
        schema = workflow.params_model.model_json_schema(ref_template=REF)
        schema["title"] = workflow.manifest.title
        for prop in schema.get("properties", {}).values():
            _image_or_url(prop)
        found[f"Params_{name}"] = schema
    return found


def _image_or_url(prop: dict[str, Any]) -> None:
    for option in [prop, *prop.get("anyOf", [])]:
        if option.get("format") == "formy-upload":
            upload = {k: option.pop(k) for k in ("type", "pattern", "format") if k in option}
            url = {"type": "string", "format": "uri", "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://"}
            option["anyOf"] = [upload, url]


def _submit_schema(catalogue: Catalogue, submit: dict[str, Any]) -> dict[str, Any]:
    """One body shape per workflow (its params checked by its schema), and the raw graph."""
    common = {k: v for k, v in submit["properties"].items() if k not in ("workflow", "params")}
    shapes: list[dict[str, Any]] = []
    for name in catalogue:
        shapes.append(
            {
                "type": "object",
                "title": f"Submit {name}",
                "required": ["workflow"],
                "additionalProperties": False,
                "properties": {
                    **{k: v for k, v in common.items() if k != "graph"},
                    "workflow": {"const": name},
                    "params": {"$ref": REF.format(model=f"Params_{name}")},
                },
            }
        )
    raw = {k: v for k, v in common.items() if k not in ("graph", "reuse")}
    graph = copy.deepcopy(submit["properties"]["graph"])
    graph["anyOf"] = [o for o in graph.get("anyOf", [graph]) if o.get("type") != "null"]
    shapes.append(
        {
            "type": "object",
            "title": "Submit a raw graph (admins)",
            "required": ["graph"],
            "additionalProperties": False,
            "properties": {**raw, "graph": graph},
        }
    )
    return {"oneOf": shapes, "description": submit.get("description", "")}


def _document(catalogue: Catalogue) -> dict[str, Any]:
    schemas = _model_schemas()
    schemas.update(_workflow_schemas(catalogue))
    schemas["SubmitRequest"] = _submit_schema(catalogue, schemas["SubmitJob"])
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "formy-async",
            "version": "1",
            "description": "An asyncio job API in front of ComfyUI. Every error answers "
            '`{"error": {"code", "message", "details"}}` with a stable code; each status '
            "lists the codes it may carry.",
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "query_token": {"type": "apiKey", "in": "query", "name": "token"},
                "signed_url": {"type": "apiKey", "in": "query", "name": "sig"},
            },
        },
        "security": [{"bearer": []}],
        "paths": paths(catalogue),
    }


#: the document made for each catalogue (an app loads its own once), with the versions of the
#: workflows it was made from: a reloaded catalogue (see catalogue_watch) gets a new one
_MADE: dict[int, tuple[Catalogue, tuple[tuple[str, str], ...], dict[str, Any]]] = {}


def openapi_document(catalogue: Catalogue) -> dict[str, Any]:
    """The OpenAPI 3.1 description of the API with this catalogue's workflows."""
    versions = tuple((name, workflow.version) for name, workflow in catalogue.items())
    made = _MADE.get(id(catalogue))
    if made is None or made[0] is not catalogue or made[1] != versions:
        made = _MADE[id(catalogue)] = (catalogue, versions, _document(catalogue))
    return made[2]


@routes.get("/api/openapi.json")
async def get_openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_document(request.app[CATALOGUE]))
