"""What jobs can use: the workflow catalogue, and the models the ComfyUI backends have."""

from __future__ import annotations

from aiohttp import web

from .context import CATALOGUE, IDENTITY, MODELS

routes = web.RouteTableDef()


@routes.get("/api/workflows")
async def list_workflows(request: web.Request) -> web.Response:
    catalogue = request.app[CATALOGUE]
    return web.json_response({"workflows": [w.describe() for w in catalogue.values()]})


@routes.get("/api/workflows/{name}")
async def get_workflow(request: web.Request) -> web.Response:
    """The workflow, and the models it loads with each the number of backends that have it
    (admins: their labels); a model no backend has is what its jobs would fail on."""
    workflow = request.app[CATALOGUE].get_or_raise(request.match_info["name"])
    holders = await request.app[MODELS].holders(workflow)
    shown: dict[str, object] = (
        dict(holders)
        if (identity := request.get(IDENTITY)) is not None and identity.admin
        else {model: len(labels) for model, labels in holders.items()}
    )
    return web.json_response({**workflow.describe(), "models": shown})


@routes.get("/api/models")
async def list_models(request: web.Request) -> web.Response:
    """`{"checkpoints": [...], "diffusion_models": [...], "loras": [...], "vae": [...]}`, the
    models any backend of the pool has."""
    return web.json_response(await request.app[MODELS].all())
