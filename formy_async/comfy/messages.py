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
    timestamp: float | None = None  # ComfyUI's clock, whole milliseconds


class ExecutionCached(_Message):
    type: Literal["execution_cached"] = "execution_cached"
    nodes: list[str] = []
    timestamp: float | None = None


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
    timestamp: float | None = None


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


class FileRef(BaseModel):
    """Where ComfyUI keeps one output file, fetched with GET /view; and what kind it is.

    Asset fields a newer server may add (`id`, `preview_id`, `asset`) are ignored: the file is
    always fetched by filename, subfolder and type. VideoHelperSuite's `fullpath` (a path on
    ComfyUI's disk) is never read.
    """

    model_config = ConfigDict(extra="ignore")

    node_id: str = ""
    media: str = "images"  # the key it came under: images, gifs, video, audio, 3d, …
    filename: str
    subfolder: str = ""
    type: str = "output"
    format: str = ""  # a MIME type some custom nodes give (VideoHelperSuite: video/h264-mp4)
    animated: bool = False


#: keys of a node's UI output that hold no files
_NOT_FILES = frozenset({"animated", "text", "latents", "result"})
#: 3D files some nodes list as plain filename strings
_THREE_D = (".glb", ".gltf", ".obj", ".fbx", ".usdz")


def _file_items(node_id: str, output: dict[str, Any]) -> list[FileRef]:
    animated = bool(output.get("animated")) and any(output.get("animated") or [])
    found = []
    for media, items in output.items():
        if media in _NOT_FILES or not isinstance(items, list):
            continue
        for item in items:
            if isinstance(item, str) and item.lower().endswith(_THREE_D):
                item = {"filename": item, "type": "output"}
            if not isinstance(item, dict) or not isinstance(item.get("filename"), str):
                continue
            try:
                ref = FileRef.model_validate({**item, "node_id": node_id, "media": media})
            except ValidationError:
                continue
            found.append(ref.model_copy(update={"animated": animated and media == "images"}))
    return found


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

    def files(self, node_ids: list[str] | None = None) -> list[FileRef]:
        """Every file the given output nodes (all of them for None) produced, in order: images,
        animations, videos, audio, 3D models, whatever the node listed."""
        ids = node_ids if node_ids is not None else list(self.outputs)
        return [ref for n in ids for ref in _file_items(n, self.outputs.get(n, {}))]

    def texts(self, node_ids: list[str] | None = None) -> list[tuple[str, str]]:
        """(node id, text) for every text output (PreviewAny and the like), in order."""
        ids = node_ids if node_ids is not None else list(self.outputs)
        found = []
        for node_id in ids:
            texts = self.outputs.get(node_id, {}).get("text")
            for text in texts if isinstance(texts, list) else []:
                if isinstance(text, list | tuple):  # some nodes give (text,) tuples
                    text = text[0] if text else ""
                if isinstance(text, str):
                    found.append((node_id, text))
        return found
