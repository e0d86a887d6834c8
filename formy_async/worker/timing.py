"""How long a prompt's model loads and its execution took, read off ComfyUI's messages."""

from __future__ import annotations

import time
from typing import Any

from ..comfy.loaders import is_loader
from ..comfy.messages import ComfyMessage, Executing, ExecutionStart


class RunTimes:
    """Fed every message of one prompt; then `switch` (seconds its loader nodes ran, None if
    every loader was cached: no model was loaded) and `run` (seconds it executed, loads left
    out: what a prompt with its models loaded takes)."""

    def __init__(self, graph: dict[str, Any]) -> None:
        self.graph = graph
        self._started: float | None = None
        self._loading_since: float | None = None
        self._loading = 0.0
        self._loaded = False
        self._ended: float | None = None

    def seen(self, message: ComfyMessage) -> None:
        now = time.monotonic()
        if isinstance(message, ExecutionStart):
            self._started = now
        if not isinstance(message, Executing):
            return
        if self._loading_since is not None:  # the next node starting ends the loader's run
            self._loading += now - self._loading_since
            self._loading_since = None
        if message.node is None:
            self._ended = now
        elif is_loader(self.graph.get(message.node, {})):
            self._loading_since, self._loaded = now, True

    @property
    def switch(self) -> float | None:
        return self._loading if self._loaded else None

    @property
    def run(self) -> float | None:
        if self._started is None or self._ended is None:
            return None
        return self._ended - self._started - self._loading
