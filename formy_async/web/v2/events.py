"""A job's events as v2's Server-Sent Events: `status`, `progress`, `preview`, `output`, `log`.

The same log and live relay as our own stream, each event rendered as v2 names it: `status`
when the status or place in line changes, `progress` as a complete snapshot at most twice a
second, `preview` with the image inline (base64), `output` per stored file, `log` for a retry.
Frames keep our `id:` (a seq), so a client that sends `Last-Event-ID` resumes where it was; v2
clients may ignore it. A finished job with nothing after the asked seq gets its final status.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from aiohttp import web

from ...models import Job, NodeProgress, OutputFile
from ..context import HUB, SETTINGS, STORE
from ..events import after_seq
from ..sse import EventStream, serve_stream
from .views import Presenter, snapshot, v2_status
from .wire import V2Status

#: at most one progress snapshot this often (about two a second, as v2 streams them)
PROGRESS_INTERVAL = 0.5
_FINAL: dict[str, V2Status] = {"done": "succeeded", "failed": "failed", "cancelled": "canceled"}


def v2_frame(seq: int | None, name: str, data: dict[str, Any]) -> bytes:
    head = f"id: {seq}\n" if seq is not None else ""
    return f"{head}event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class V2EventStream(EventStream):
    """One client's v2 stream of one job."""

    def __init__(self, request: web.Request, job: Job, after: int) -> None:
        settings = request.app[SETTINGS]
        super().__init__(
            request.app[HUB],
            request.app[STORE],
            job.id,
            after,
            send_timeout=settings.ws_send_timeout,
        )
        self.present = Presenter.of(request)
        self.status: V2Status | None = None
        self.position: int | None = None
        self.progress_at = 0.0
        self.held = b""  # a progress frame the throttle kept back
        self.sent_outputs: set[str] = set()

    async def render(self, seq: int, event_type: str, raw: str) -> bytes:
        event = json.loads(raw)
        if event_type == "progress":
            return self._progress(seq, event)
        # the latest snapshot held back by the throttle goes out before what follows it
        held, self.held = self.held, b""
        return held + await self._render(seq, event_type, event)

    async def _render(self, seq: int, event_type: str, event: dict[str, Any]) -> bytes:
        if event_type == "preview":
            return await self._preview(seq, event)
        if event_type == "output":
            return self._output(seq, OutputFile.model_validate(event["output"]))
        if event_type == "retrying":
            error = event.get("error") or {}
            message = f"retrying (attempt {event['attempt']} of {event['max_attempts']}): "
            log = v2_frame(
                seq, "log", {"level": "warning", "message": message + error.get("message", "")}
            )
            return log + self._status(seq, "queued", None)
        if event_type == "done":
            late = [o for o in event.get("outputs", []) if o["filename"] not in self.sent_outputs]
            frames = b"".join(self._output(seq, OutputFile.model_validate(o)) for o in late)
            return frames + self._status(seq, "succeeded", None)
        if event_type in _FINAL:
            return self._status(seq, _FINAL[event_type], None)
        if event_type == "queued":
            return self._status(seq, "queued", event.get("position"))
        if event_type == "started":
            return self._status(seq, "running", None)
        if event_type == "submitted":
            return self._status(seq, "queued", None)
        return b""

    def _status(self, seq: int, status: V2Status, position: int | None) -> bytes:
        if (status, position) == (self.status, self.position):
            return b""
        self.status, self.position = status, position
        data: dict[str, Any] = {"status": status}
        if position is not None:
            data["queue_position"] = position
        return v2_frame(seq, "status", data)

    def _progress(self, seq: int, event: dict[str, Any]) -> bytes:
        status = self._status(seq, "running", None)
        step = NodeProgress.model_validate(event)
        progress = snapshot(event.get("progress", 0), step).model_dump(mode="json")
        moment = time.monotonic()
        if moment - self.progress_at < PROGRESS_INTERVAL:
            self.held = v2_frame(seq, "progress", progress)
            return status
        self.progress_at, self.held = moment, b""
        return status + v2_frame(seq, "progress", progress)

    async def _preview(self, seq: int, event: dict[str, Any]) -> bytes:
        preview = await self.store.preview(self.job_id)
        if preview is None:  # replaced by a later one, or expired: nothing to show
            return b""
        data = {
            "node_id": event.get("node") or "",
            "content_type": preview.content_type,
            "data_base64": base64.b64encode(preview.data).decode(),
        }
        return v2_frame(seq, "preview", data)

    def _output(self, seq: int, output: OutputFile) -> bytes:
        self.sent_outputs.add(output.filename)
        shown = self.present.output(self.job_id, output)
        return v2_frame(seq, "output", shown.model_dump(mode="json"))


async def stream_v2_events(request: web.Request, job: Job) -> web.StreamResponse:
    """The job's events as v2 SSE, from the start or after `Last-Event-ID`."""
    resumed = request.headers.get("Last-Event-ID")
    after = after_seq(resumed.strip()) if resumed is not None else 0
    stream = V2EventStream(request, job, after)
    if job.is_final and not await request.app[STORE].events(job.id, after, after + 1):
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(v2_frame(None, "status", {"status": v2_status(job)}))
        await response.write_eof()
        return response
    return await serve_stream(request, stream)
