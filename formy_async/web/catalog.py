"""What jobs can use: the workflow catalogue and the models the ComfyUI backend has."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
from aiohttp import web

from ..errors import ComfyUnavailable, InvalidParams
from ..settings import Settings
from ..workflows import Workflow
from .context import CATALOGUE

routes = web.RouteTableDef()

MODEL_FOLDERS = ("checkpoints", "controlnet", "diffusion_models", "loras", "vae")


class ModelsCache:
    """ComfyUI's model lists per folder, fetched over HTTP and kept for a short while."""

    def __init__(self, settings: Settings, session: aiohttp.ClientSession) -> None:
        self.base = settings.comfyui_base
        self.ttl = settings.models_cache_ttl
        self.session = session
        self._cache: dict[str, tuple[float, list[str]]] = {}

    async def folder(self, name: str) -> list[str]:
        cached = self._cache.get(name)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        url = f"{self.base}/models/{name}"
        try:
            async with self.session.get(url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
                if resp.status >= 500:
                    raise ComfyUnavailable(f"ComfyUI answered /models/{name} with {resp.status}")
                names = await resp.json() if resp.status == 200 else []
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise ComfyUnavailable(f"ComfyUI at {self.base} is unreachable: {exc!r}") from exc
        found = [str(n) for n in names] if isinstance(names, list) else []
        self._cache[name] = (time.monotonic() + self.ttl, found)
        return found

    async def all(self) -> dict[str, list[str]]:
        lists = await asyncio.gather(*(self.folder(name) for name in MODEL_FOLDERS))
        return dict(zip(MODEL_FOLDERS, lists, strict=True))

    async def check(self, workflow: Workflow, params: dict[str, Any]) -> None:
        """Refuse a model param naming a model the backend lacks, before anything is queued.

        When ComfyUI cannot be asked, the check is skipped: the job waits in the queue and
        ComfyUI's own validation will have the last word.
        """
        problems = []
        for param, folder in workflow.model_params().items():
            value = params.get(param)
            if value is None:
                continue
            try:
                available = await self.folder(folder)
            except ComfyUnavailable:
                return
            if value not in available:
                problems.append(
                    {
                        "param": param,
                        "type": "model_not_found",
                        "message": f"{value!r} is not in ComfyUI's {folder}",
                        "available": available[:50],
                    }
                )
        if problems:
            raise InvalidParams(
                "; ".join(f"{p['param']}: {p['message']}" for p in problems),
                details=problems,
                code="model_not_found",
            )


MODELS = web.AppKey("models", ModelsCache)


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
    """`{"checkpoints": [...], "diffusion_models": [...], "loras": [...], "vae": [...]}`."""
    return web.json_response(await request.app[MODELS].all())
