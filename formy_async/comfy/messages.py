"""Typed shapes of what ComfyUI sends: WebSocket messages, preview frames and history entries."""

from __future__ import annotations

import json
import struct
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    prompt_id: str | None = None


class ExecutionStart(_Message):
    type: Literal["execution_start"] = "execution_start"


class ExecutionCached(_Message):
    type: Literal["execution_cached"] = "execution_cached"
    nodes: list[str] = []


class Executing(_Message):
    """A node is about to run; `node` None means the prompt is over (history is written)."""

    type: Literal["executing"] = "executing"
    node: str | None = None
    display_node: str | None = None


class ProgressStep(_Message):
    type: Literal["progress"] = "progress"
    node: str | None = None
    value: float
    max: float


class Executed(_Message):
    type: Literal["executed"] = "executed"
    node: str
    output: dict[str, Any] = {}


class ExecutionSuccess(_Message):
    type: Literal["execution_success"] = "execution_success"


class ExecutionError(_Message):
    type: Literal["execution_error"] = "execution_error"
    node_id: str | None = None
    node_type: str | None = None
    exception_type: str = ""
    exception_message: str = ""


class ExecutionInterrupted(_Message):
    type: Literal["execution_interrupted"] = "execution_interrupted"
    node_id: str | None = None
    node_type: str | None = None


class PreviewImage(BaseModel):
    """A binary preview frame: the image bytes and, when negotiated, whose prompt it belongs to."""

    type: Literal["preview"] = "preview"
    prompt_id: str | None = None
    node: str | None = None
    content_type: str
    data: bytes


ComfyMessage = (
    ExecutionStart
    | ExecutionCached
    | Executing
    | ProgressStep
    | Executed
    | ExecutionSuccess
    | ExecutionError
    | ExecutionInterrupted
    | PreviewImage
)

_BY_TYPE: dict[str, type[_Message]] = {
    cls.model_fields["type"].default: cls
    for cls in (
        ExecutionStart,
        ExecutionCached,
        Executing,
        ProgressStep,
        Executed,
        ExecutionSuccess,
        ExecutionError,
        ExecutionInterrupted,
    )
}

# binary frame event types (ComfyUI's protocol.py)
_PREVIEW_IMAGE = 1
_PREVIEW_IMAGE_WITH_METADATA = 4
_IMAGE_FORMATS = {1: "image/jpeg", 2: "image/png"}


def parse_text(raw: str) -> ComfyMessage | None:
    """A typed message, or None for types a job does not need (status, feature_flags, …)."""
    try:
        frame = json.loads(raw)
        cls = _BY_TYPE.get(frame.get("type"))
        if cls is None or not isinstance(frame.get("data"), dict):
            return None
        return cls.model_validate(frame["data"])  # type: ignore[return-value]
    except (ValueError, AttributeError, ValidationError):
        return None


def parse_binary(frame: bytes) -> PreviewImage | None:
    """A preview image from a binary frame, or None for other frames (text, unknown)."""
    if len(frame) < 8:
        return None
    (event,) = struct.unpack(">I", frame[:4])
    if event == _PREVIEW_IMAGE:
        (fmt,) = struct.unpack(">I", frame[4:8])
        return PreviewImage(content_type=_IMAGE_FORMATS.get(fmt, "image/jpeg"), data=frame[8:])
    if event == _PREVIEW_IMAGE_WITH_METADATA:
        (length,) = struct.unpack(">I", frame[4:8])
        try:
            meta = json.loads(frame[8 : 8 + length])
        except ValueError:
            return None
        return PreviewImage(
            prompt_id=meta.get("prompt_id"),
            node=meta.get("node_id"),
            content_type=meta.get("image_type", "image/jpeg"),
            data=frame[8 + length :],
        )
    return None


class ImageRef(BaseModel):
    """Where ComfyUI keeps one output file; fetched with GET /view."""

    model_config = ConfigDict(extra="ignore")

    filename: str
    subfolder: str = ""
    type: str = "output"


class HistoryStatus(BaseModel):
    model_config = ConfigDict(extra="ignore")

    status_str: str = ""
    completed: bool = False
    messages: list[tuple[str, dict[str, Any]]] = []

    def last(self, *types: str) -> tuple[str, dict[str, Any]] | None:
        for name, data in reversed(self.messages):
            if name in types:
                return name, data
        return None


class HistoryEntry(BaseModel):
    """One finished prompt as `GET /history/{prompt_id}` reports it."""

    model_config = ConfigDict(extra="ignore")

    outputs: dict[str, dict[str, Any]] = {}
    status: HistoryStatus = HistoryStatus()

    def images(self, node_ids: list[str]) -> list[tuple[str, ImageRef]]:
        """(node id, file) for every image the given output nodes produced, in order."""
        found = []
        for node_id in node_ids:
            for item in self.outputs.get(node_id, {}).get("images", []):
                found.append((node_id, ImageRef.model_validate(item)))
        return found
