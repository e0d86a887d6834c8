"""Per-prompt progress: the progress_state snapshot and the NodeContext handed to running nodes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PIL import Image

from . import pictures
from .hub import Hub, preview_frame, preview_metadata_frame, text_frame
from .nodes import Env, JsonDict

JPEG = 1


class ProgressState:
    """Every node touched so far in one prompt, sent whole on each change."""

    def __init__(self, prompt_id: str, emit: Callable[[str, JsonDict], None]) -> None:
        self.prompt_id = prompt_id
        self._emit = emit
        self.nodes: dict[str, JsonDict] = {}

    def _entry(self, node_id: str, value: float, total: float) -> JsonDict:
        return {
            "value": value,
            "max": total,
            "state": "running",
            "node_id": node_id,
            "prompt_id": self.prompt_id,
            "display_node_id": node_id,
            "parent_node_id": None,
            "real_node_id": node_id,
        }

    def start(self, node_id: str) -> None:
        self.nodes[node_id] = self._entry(node_id, 0.0, 1.0)
        self._send()

    def update(self, node_id: str, value: float, total: float) -> None:
        entry = self.nodes.setdefault(node_id, self._entry(node_id, 0, 1))
        entry.update(value=value, max=total, state="running")
        self._send()

    def finish(self, node_id: str) -> None:
        # A node finished without starting (a cached output) shows the integers 1/1.
        entry = self.nodes.setdefault(node_id, self._entry(node_id, 0, 1))
        entry.update(value=entry["max"], state="finished")
        self._send()

    def _send(self) -> None:
        nodes = {key: dict(value) for key, value in self.nodes.items()}
        self._emit("progress_state", {"prompt_id": self.prompt_id, "nodes": nodes})


@dataclass
class NodeRuntime:
    """The NodeContext for one node execution; progress goes through ComfyUI's hook order."""

    env: Env
    node_id: str
    prompt_id: str
    prompt: JsonDict
    extra_pnginfo: JsonDict | None
    hub: Hub
    state: ProgressState
    check_interrupt: Callable[[], None]

    async def progress(
        self, value: int | float, total: int | float, preview: Image.Image | None = None
    ) -> None:
        self.check_interrupt()
        self.state.update(self.node_id, value, total)
        sid = self.hub.client_id
        jpeg = None if preview is None else await asyncio.to_thread(pictures.jpeg_bytes, preview)
        with_metadata = self.hub.supports_preview_metadata(sid)
        if jpeg is not None and with_metadata:
            self.hub.send_bytes(preview_metadata_frame(self._preview_meta(), jpeg), sid)
        message: JsonDict = {
            "value": value,
            "max": total,
            "prompt_id": self.prompt_id,
            "node": self.node_id,
        }
        self.hub.send("progress", message, sid)
        if jpeg is not None and not with_metadata:
            self.hub.send_bytes(preview_frame(JPEG, jpeg), sid)

    def _preview_meta(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "prompt_id": self.prompt_id,
            "display_node_id": self.node_id,
            "parent_node_id": None,
            "real_node_id": self.node_id,
            "image_type": "image/jpeg",
        }

    def progress_text(self, text: str) -> None:
        self.hub.send_bytes(text_frame(self.node_id, text), None)
