"""The OpenAPI description: it names every route of the app, every error code, each workflow's
params, the WebSocket and the event stream; and the server answers as it says."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from formy_async.embedded import Stack
from formy_async.settings import Settings
from formy_async.web.app import create_app
from formy_async.web.openapi import codes_by_status, openapi_document
from formy_async.workflows import Catalogue

from ..conftest import ROOT
from ..helpers import get_json

CATALOGUE = Catalogue.load(ROOT / "workflows")


def app_routes() -> set[str]:
    """`METHOD /path` of every route the app serves, placeholders as `{}` (but the Comfy API
    v2 routes, whose description is Comfy-Org's own `openapi-v2.yaml`)."""
    app = create_app(Settings(workflows_dir=ROOT / "workflows", secret_key="x" * 32))
    found = set()
    for route in app.router.routes():
        if route.method == "HEAD" or route.resource is None:
            continue
        path = route.resource.canonical
        if isinstance(route.resource, web.StaticResource):
            path += "/{}"
        if not path.startswith("/api/v2/"):
            found.add(f"{route.method} {re.sub(r'{[^}]*}', '{}', path)}")
    return found


def described_routes(document: dict[str, Any]) -> set[str]:
    return {
        f"{method.upper()} {re.sub(r'{[^}]*}', '{}', path)}"
        for path, operations in document["paths"].items()
        for method in operations
    }


def test_every_route_of_the_app_is_described() -> None:
    assert app_routes() - described_routes(openapi_document(CATALOGUE)) == set()


def test_nothing_is_described_that_the_app_does_not_serve() -> None:
    assert described_routes(openapi_document(CATALOGUE)) - app_routes() == set()


def test_every_error_code_is_in_the_description() -> None:
    schemas = openapi_document(CATALOGUE)["components"]["schemas"]
    for status, codes in codes_by_status().items():
        assert (
            schemas[f"Error{status}"]["properties"]["error"]["properties"]["code"]["enum"] == codes
        )
    every = {code for codes in codes_by_status().values() for code in codes}
    assert {"idempotency_key_reuse", "image_url_refused", "job_not_found", "not_found"} <= every


def test_each_workflows_params_are_the_schema_that_validates_them() -> None:
    schemas = openapi_document(CATALOGUE)["components"]["schemas"]
    for name, workflow in CATALOGUE.items():
        params = schemas[f"Params_{name}"]
        assert set(params["properties"]) == set(workflow.manifest.params)
        assert params.get("required", []) == workflow.params_model.model_json_schema().get(
            "required", []
        )


def test_an_image_param_takes_an_upload_id_or_a_url() -> None:
    image = openapi_document(CATALOGUE)["components"]["schemas"]["Params_upscale"]["properties"][
        "image"
    ]
    kinds = {option.get("format") for option in image["anyOf"]}
    assert kinds == {"formy-upload", "uri"}


def test_the_websocket_and_the_event_stream_are_described() -> None:
    paths = openapi_document(CATALOGUE)["paths"]
    websocket = paths["/ws"]["get"]
    stream = paths["/api/jobs/{job_id}/events"]["get"]["responses"]["200"]["content"]
    assert {m["$ref"].rsplit("/", 1)[1] for m in websocket["x-websocket"]["client"]} == {
        "Subscribe",
        "Unsubscribe",
        "Authenticate",
    }
    assert set(stream) == {"application/json", "text/event-stream"}
    assert "Last-Event-ID" in {
        p["name"] for p in paths["/api/jobs/{job_id}/events"]["get"]["parameters"]
    }


async def test_the_server_answers_its_description_without_a_token(fake_stack: Stack) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as anonymous:
        status, served = await get_json(anonymous, f"{fake_stack.url}/api/openapi.json")
    assert status == 200
    assert served["openapi"] == "3.1.0"
    assert served == openapi_document(Catalogue.load(ROOT / "workflows"))
