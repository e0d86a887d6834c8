"""What jobs can use: the workflow catalogue, and the models the ComfyUI backends have."""

from __future__ import annotations

from aiohttp import web

from .context import CATALOGUE, MODELS

routes = web.RouteTableDef()


@routes.get("/api/workflows")
async def list_workflows(request: web.Request) -> web.Response:
    catalogue = request.app[CATALOGUE]
    return web.json_response({"workflows": [w.describe() for w in catalogue.values()]})


@routes.get("/api/workflows/{name}")
async def get_workflow(request: web.Request) -> web.Response:
    workflow = request.app[CATALOGUE].get_or_raise(request.match_info["name"])
    return web.json_response(workflow.describe())


@routes.get("/api/models")
async def list_models(request: web.Request) -> web.Response:
    """`{"checkpoints": [...], "diffusion_models": [...], "loras": [...], "vae": [...]}`, the
    models any backend of the pool has."""
    return web.json_response(await request.app[MODELS].all())
