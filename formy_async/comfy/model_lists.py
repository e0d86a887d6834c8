"""The models a pool of ComfyUI backends has, per folder: asked of every backend, kept a while."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from ..errors import ComfyUnavailable, ModelNotFound
from ..workflows import Workflow
from .client import ComfyClient
from .loaders import loader_models

MODEL_FOLDERS = ("checkpoints", "controlnet", "diffusion_models", "loras", "vae")


class ModelsCache:
    """Every backend's model list per folder, merged, fetched over HTTP and kept `ttl` seconds."""

    def __init__(self, clients: Sequence[ComfyClient], *, ttl: float) -> None:
        self.clients = list(clients)
        self.ttl = ttl
        #: folder → (until, each backend's list by label; a backend that did not answer: absent)
        self._cache: dict[str, tuple[float, dict[str, list[str]]]] = {}

    async def by_backend(self, name: str) -> dict[str, list[str]]:
        """Each answering backend's names in the folder, by its label; ComfyUnavailable when
        none answers."""
        cached = self._cache.get(name)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        answers = await asyncio.gather(
            *(client.models(name) for client in self.clients), return_exceptions=True
        )
        lists = {
            client.label: answer
            for client, answer in zip(self.clients, answers, strict=True)
            if isinstance(answer, list)
        }
        if not lists:
            failure = next(a for a in answers if isinstance(a, BaseException))
            if isinstance(failure, ComfyUnavailable):
                raise failure
            raise ComfyUnavailable(f"no ComfyUI backend listed its {name}: {failure!r}")
        self._cache[name] = (time.monotonic() + self.ttl, lists)
        return lists

    async def folder(self, name: str) -> list[str]:
        """The names any backend lists in the folder; ComfyUnavailable when none answers."""
        lists = await self.by_backend(name)
        return list(dict.fromkeys(model for models in lists.values() for model in models))

    async def holders(self, workflow: Workflow) -> dict[str, list[str]]:
        """Every model the workflow's graph loads with its default params → the labels of the
        backends that list it (in any model folder); {} when no backend answers."""
        defaults = {name: spec.default for name, spec in workflow.manifest.params.items()}
        needed = loader_models(workflow.render(defaults, output_prefix=""))
        found: dict[str, list[str]] = {model: [] for model in sorted(needed)}
        try:
            folders = await asyncio.gather(*(self.by_backend(f) for f in MODEL_FOLDERS))
        except ComfyUnavailable:
            return {}
        for lists in folders:
            for label, models in lists.items():
                for model in needed.intersection(models):
                    if label not in found[model]:
                        found[model].append(label)
        return found

    async def all(self) -> dict[str, list[str]]:
        lists = await asyncio.gather(*(self.folder(name) for name in MODEL_FOLDERS))
        return dict(zip(MODEL_FOLDERS, lists, strict=True))

    async def check(self, workflow: Workflow, params: dict[str, Any]) -> None:
        """Refuse a model param naming a model no backend has, before anything is queued.

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
            raise ModelNotFound(
                "; ".join(f"{p['param']}: {p['message']}" for p in problems), details=problems
            )
