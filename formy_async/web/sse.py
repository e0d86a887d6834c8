"""A job's events as Server-Sent Events: the log after a seq, then live ones, until the last.

Each event goes out as `id: <seq>`, `event: <type>` and its JSON as `data:`; a browser's
EventSource that loses the connection reconnects by itself with `Last-Event-ID` and gets each
later event once. Live events come through the process's event hub as a WebSocket's do: they
are deduplicated by seq, a gap (a missed publish) and a resync of the hub are filled from the
log. A comment line every FORMY_SSE_HEARTBEAT seconds keeps proxies from closing an idle
stream; the stream ends after the job's final event, and a request for a finished job with
nothing left to send is answered 204, which tells an EventSource to stop reconnecting.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

import structlog
from aiohttp import web
from redis.exceptions import RedisError

from ..models import FINAL_EVENT_TYPES
from ..store.hub import RESYNC, EventHub
from ..store.jobs import JobStore
from .context import CLOSING, HUB, SETTINGS, STORE

log = structlog.get_logger()

#: live events held for a stream whose client reads slowly; past it, it reads them from the log
BUFFER = 1000
#: how long the client's reconnection waits after the stream breaks (the `retry:` field)
RETRY_MS = 2000


def wants_stream(request: web.Request) -> bool:
    """Whether the request asks for `text/event-stream` (as EventSource does)."""
    for item in request.headers.getall("Accept", []):
        for media in item.split(","):
            kind, *options = (part.strip() for part in media.split(";"))
            if kind.lower() == "text/event-stream" and "q=0" not in options:
                return True
    return False


def frame(seq: int, event_type: str, raw: str) -> bytes:
    """An event as a Server-Sent Events frame (its JSON holds no newline)."""
    return f"id: {seq}\nevent: {event_type}\ndata: {raw}\n\n".encode()


def _type_of(raw: str) -> str:
    return raw[raw.index('"type":"') + 8 :].split('"', 1)[0]


class EventStream:
    """One client's stream of one job: a sink of the hub, and the loop that writes to it."""

    def __init__(
        self, hub: EventHub, store: JobStore, job_id: str, after: int, *, send_timeout: float
    ) -> None:
        self.send_timeout = send_timeout  # a client that takes nothing this long is dropped
        self.hub = hub
        self.store = store
        self.job_id = job_id
        self.last = after
        self.pending: deque[tuple[int, str]] = deque()
        self.behind = False  # live events were dropped (or missed): read the log
        self.wake = asyncio.Event()
        self.finished = False

    def __call__(self, job_id: str, seq: int, raw: str) -> None:
        if seq == RESYNC or len(self.pending) >= BUFFER:
            self.behind = True
            self.pending.clear()
        else:
            self.pending.append((seq, raw))
        self.wake.set()

    async def run(
        self, response: web.StreamResponse, heartbeat: float, closing: asyncio.Event
    ) -> None:
        """Write the log after `last`, then live events, until the final one (or shutdown)."""
        await self._write(response, f"retry: {RETRY_MS}\n\n".encode())
        await self._catch_up(response)
        while not self.finished and not closing.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(heartbeat):
                    await self._wait_for_news(closing)
            if closing.is_set():
                return
            if not self.wake.is_set() and not self.pending and not self.behind:
                await self._write(response, b": keep-alive\n\n")
                continue
            self.wake.clear()
            await self._send_pending(response)

    async def _wait_for_news(self, closing: asyncio.Event) -> None:
        stop = asyncio.ensure_future(closing.wait())
        news = asyncio.ensure_future(self.wake.wait())
        try:
            await asyncio.wait({stop, news}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            news.cancel()

    async def _send_pending(self, response: web.StreamResponse) -> None:
        if self.behind:
            self.behind = False
            self.pending.clear()
            await self._catch_up(response)
        while self.pending and not self.finished:
            seq, raw = self.pending.popleft()
            if seq <= self.last:
                continue  # already sent (from the log)
            if seq > self.last + 1:  # a gap: the events between are in the log
                await self._catch_up(response, until=seq - 1)
            await self._send(response, seq, raw)

    async def _catch_up(self, response: web.StreamResponse, until: int = -1) -> None:
        async with self.hub.reads:
            missed = await self.store.events(self.job_id, self.last, until)
        for offset, raw in enumerate(missed, self.last + 1):
            await self._send(response, offset, raw)
            if self.finished:
                return

    async def _send(self, response: web.StreamResponse, seq: int, raw: str) -> None:
        self.last = seq
        event_type = _type_of(raw)
        data = await self.render(seq, event_type, raw)
        if data:
            await self._write(response, data)
        if event_type in FINAL_EVENT_TYPES:
            self.finished = True

    async def render(self, seq: int, event_type: str, raw: str) -> bytes:
        """What goes on the wire for one event (a stream of another API renders its own)."""
        return frame(seq, event_type, raw)

    async def _write(self, response: web.StreamResponse, data: bytes) -> None:
        async with asyncio.timeout(self.send_timeout):
            await response.write(data)


async def stream_events(
    request: web.Request, job_id: str, after: int, final: bool
) -> web.StreamResponse:
    """The job's events from `after` on, as Server-Sent Events (see the module's docstring)."""
    store = request.app[STORE]
    if final and not await store.events(job_id, after, after + 1):
        return web.Response(status=204)  # nothing more will come: an EventSource stops here
    hub, settings = request.app[HUB], request.app[SETTINGS]
    stream = EventStream(hub, store, job_id, after, send_timeout=settings.ws_send_timeout)
    return await serve_stream(request, stream)


async def serve_stream(request: web.Request, stream: EventStream) -> web.StreamResponse:
    """Answer the request with the stream's events, until its job's last (or shutdown)."""
    hub, settings, job_id = request.app[HUB], request.app[SETTINGS], stream.job_id
    hub.subscribe(job_id, stream)  # the log is read once its events flow (`hub.live`)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # nginx would hold events back to fill its buffer
        }
    )
    try:
        await hub.live(job_id)
        await response.prepare(request)
        await stream.run(response, settings.sse_heartbeat, request.app[CLOSING])
    except (
        ConnectionError,
        TimeoutError,
        RedisError,
    ) as exc:  # the client reconnects with Last-Event-ID
        log.info("sse_stream_ended", job_id=job_id, error=str(exc) or type(exc).__name__)
    finally:
        hub.unsubscribe(job_id, stream)
    return response
