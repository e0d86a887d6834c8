"""WebSocket sessions and message routing, with ComfyUI's sid map and its quirks kept intact."""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import uuid
from collections.abc import Callable
from typing import Any

import structlog
from aiohttp import WSCloseCode, WSMsgType, web

log = structlog.get_logger()

PREVIEW_IMAGE = 1
UNENCODED_PREVIEW_IMAGE = 2
TEXT = 3
PREVIEW_IMAGE_WITH_METADATA = 4
SEND_TIMEOUT = 5.0

JsonDict = dict[str, Any]
# An outgoing frame: (payload, sid); a str payload is a JSON text frame, bytes a binary frame.
Frame = tuple[str | bytes, str | None]


def binary_frame(event: int, payload: bytes) -> bytes:
    return struct.pack(">I", event) + payload


def text_frame(node_id: str, text: str) -> bytes:
    node = node_id.encode()
    return binary_frame(TEXT, struct.pack(">I", len(node)) + node + text.encode())


def preview_frame(image_format: int, image: bytes) -> bytes:
    return binary_frame(PREVIEW_IMAGE, struct.pack(">I", image_format) + image)


def preview_metadata_frame(metadata: JsonDict, image: bytes) -> bytes:
    meta = json.dumps(metadata).encode()
    return binary_frame(PREVIEW_IMAGE_WITH_METADATA, struct.pack(">I", len(meta)) + meta + image)


class Hub:
    """Holds sockets by sid and sends frames in order through one publisher task.

    Like ComfyUI, `client_id` is the single "current client" (the running prompt's target) and
    `last_node_id` the node it is executing, used when that client reconnects.
    """

    def __init__(self, server_features: JsonDict, queue_remaining: Callable[[], int]) -> None:
        self.server_features = server_features
        self.queue_remaining = queue_remaining
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.socket_flags: dict[str, JsonDict] = {}
        self.client_id: str | None = None
        self.last_node_id: str | None = None
        self._open: set[web.WebSocketResponse] = set()
        self._outbox: asyncio.Queue[Frame] = asyncio.Queue()
        self._publisher: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._publisher = asyncio.create_task(self._publish_forever(), name="simulator_publisher")

    async def aclose(self) -> None:
        if self._publisher is not None:
            self._publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._publisher
        for ws in list(self._open):
            with contextlib.suppress(Exception):
                await ws.close(code=WSCloseCode.GOING_AWAY, message=b"Server shutdown")

    def send(self, event: str, data: JsonDict, sid: str | None) -> None:
        """Queue a JSON message: to `sid` if it has a socket, to everyone when `sid` is None."""
        self._outbox.put_nowait((json.dumps({"type": event, "data": data}), sid))

    def send_bytes(self, frame: bytes, sid: str | None) -> None:
        self._outbox.put_nowait((frame, sid))

    def send_status(self) -> None:
        self.send("status", {"status": self.queue_info()}, None)

    def queue_info(self) -> JsonDict:
        return {"exec_info": {"queue_remaining": self.queue_remaining()}}

    def supports_preview_metadata(self, sid: str | None) -> bool:
        if sid is None or sid not in self.socket_flags:
            return False
        return (
            self.socket_flags[sid].get("feature_flags", {}).get("supports_preview_metadata") is True
        )

    async def _publish_forever(self) -> None:
        while True:
            payload, sid = await self._outbox.get()
            if sid is None:
                targets = list(self.sockets.values())
            else:
                ws = self.sockets.get(sid)
                targets = [] if ws is None else [ws]
            for ws in targets:
                await self._deliver(ws, payload)

    async def _deliver(self, ws: web.WebSocketResponse, payload: str | bytes) -> None:
        try:
            async with asyncio.timeout(SEND_TIMEOUT):
                if isinstance(payload, str):
                    await ws.send_str(payload)
                else:
                    await ws.send_bytes(payload)
        except (ConnectionError, RuntimeError, TimeoutError) as exc:
            log.debug("ws_send_failed", error=repr(exc))

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.query.get("clientId", "")
        if sid:
            # ComfyUI drops the old entry and never closes it: the older socket goes silent.
            self.sockets.pop(sid, None)
        else:
            sid = uuid.uuid4().hex
        self.sockets[sid] = ws
        self.socket_flags[sid] = {"feature_flags": {}}
        self._open.add(ws)
        log.info("ws_connected", sid=sid)
        try:
            await self._deliver(ws, _json("status", {"status": self.queue_info(), "sid": sid}))
            if self.client_id == sid and self.last_node_id is not None:
                await self._deliver(ws, _json("executing", {"node": self.last_node_id}))
            await self._read_messages(ws, sid)
        finally:
            # Faithful to ComfyUI: this may remove a *newer* socket registered under the same sid.
            self.sockets.pop(sid, None)
            self.socket_flags.pop(sid, None)
            self._open.discard(ws)
            log.info("ws_disconnected", sid=sid)
        return ws

    async def _read_messages(self, ws: web.WebSocketResponse, sid: str) -> None:
        first_message = True
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            try:
                data = json.loads(msg.data)
            except json.JSONDecodeError:
                log.warning("ws_invalid_json", sid=sid)
                continue
            if first_message and isinstance(data, dict) and data.get("type") == "feature_flags":
                flags = data.get("data", {})
                if sid in self.socket_flags:
                    self.socket_flags[sid]["feature_flags"] = flags
                await self._deliver(ws, _json("feature_flags", self.server_features))
            first_message = False


def _json(event: str, data: JsonDict) -> str:
    return json.dumps({"type": event, "data": data})
