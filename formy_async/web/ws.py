"""The browser WebSocket: subscribe to jobs; every event after a seq, then live ones."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from typing import Any

import structlog
from aiohttp import WSMessage, WSMsgType, web
from pydantic import ValidationError

from .. import keys
from ..auth import Identity, bearer, verify_token
from ..errors import Forbidden, Unauthorized
from ..events import EventHub
from ..jobstore import JobStore
from ..metrics import WebMetrics, event_ts
from ..models import CLIENT_MESSAGE_ADAPTER, Authenticate, Job, Subscribe, Unsubscribe
from .context import HUB, SETTINGS, SOCKETS, STORE
from .metrics import METRICS
from .security import origin_allowed

log = structlog.get_logger()

_SYNC = -1  # queue marker: send whatever the log holds after the last seq sent


class Connection:
    """One browser socket: its subscriptions, a bounded outbox and the task that drains it.

    The writer task exists only while there is something to send, so an idle socket costs
    little more than aiohttp's own.

    Every job's events reach the socket in seq order, each exactly once: live events are
    deduplicated by seq, and a gap (a missed publish, a late subscription) is filled from the
    job's event log before the live event is sent.
    """

    def __init__(
        self,
        ws: web.WebSocketResponse,
        hub: EventHub,
        store: JobStore,
        size: int,
        metrics: WebMetrics | None = None,
    ):
        self.ws = ws
        self.metrics = metrics
        self.hub = hub
        self.store = store
        self.last_seq: dict[str, int] = {}
        self.size = size
        self.outbox: deque[tuple[str, int, str]] = deque()
        self.overflowed: dict[str, int] = {}
        self.writer: asyncio.Task[None] | None = None
        hub.resync_hooks.add(self.resync)

    # --- called by the hub (must not block) -----------------------------------------------------

    def push(self, job_id: str, seq: int, raw: str) -> None:
        if len(self.outbox) >= self.size:
            self._overflow()
        else:
            self.outbox.append((job_id, seq, raw))
        if self.writer is None:
            self.writer = asyncio.create_task(self._drain(), name="ws-writer")

    def resync(self) -> None:
        for job_id in list(self.last_seq):
            self.push(job_id, _SYNC, "")

    def _overflow(self) -> None:
        # a client too slow for its events loses its subscriptions, not the server's memory;
        # it is told the last seq it got for each job and resubscribes from there
        for job_id, seq in list(self.last_seq.items()):
            self.overflowed[job_id] = seq
            self.unsubscribe(job_id)
        self.outbox.clear()

    # --- called by the handler ----------------------------------------------------------------

    async def subscribe(self, job_id: str, after: int, identity: Identity) -> None:
        raw = await self.store.redis.get(keys.job(job_id))
        owner = Job.model_validate_json(raw).user if raw is not None else None
        if owner is None or not (identity.admin or owner == identity.user):
            await self.send_control(
                "error",
                job_id=job_id,
                error={"code": "job_not_found", "message": f"no job with id {job_id!r}"},
            )
            return
        self.overflowed.pop(job_id, None)
        if job_id not in self.last_seq:
            self.hub.subscribe(job_id, self.push)
        self.last_seq[job_id] = after
        await self.send_control("subscribed", job_id=job_id, after=after)
        self.push(job_id, _SYNC, "")

    def unsubscribe(self, job_id: str) -> None:
        if self.last_seq.pop(job_id, None) is not None:
            self.hub.unsubscribe(job_id, self.push)

    async def send_control(self, type_: str, **fields: Any) -> None:
        with contextlib.suppress(ConnectionError):
            await self.ws.send_str(json.dumps({"type": type_, **fields}))

    async def aclose(self) -> None:
        self.hub.resync_hooks.discard(self.resync)
        for job_id in list(self.last_seq):
            self.unsubscribe(job_id)
        if self.writer is not None:
            self.writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.writer

    # --- the writer ---------------------------------------------------------------------------

    async def _drain(self) -> None:
        try:
            with contextlib.suppress(ConnectionError):
                while self.outbox or self.overflowed:
                    if not self.outbox:
                        await self.send_control("overflow", last_seq=dict(self.overflowed))
                        self.overflowed.clear()
                        continue
                    await self._send(*self.outbox.popleft())
        finally:
            self.writer = None

    async def _send(self, job_id: str, seq: int, raw: str) -> None:
        last = self.last_seq.get(job_id)
        if last is None or (seq != _SYNC and seq <= last):
            return  # unsubscribed meanwhile, or already sent
        if seq == _SYNC or seq > last + 1:
            await self._send_from_log(job_id, last, None if seq == _SYNC else seq - 1)
            if seq == _SYNC:
                return
        await self.ws.send_str(raw)
        if self.metrics is not None:
            self.metrics.event_sent(event_ts(raw))
        if job_id in self.last_seq:
            self.last_seq[job_id] = seq

    async def _send_from_log(self, job_id: str, after: int, until: int | None) -> None:
        for raw in await self.store.events(job_id, after, -1 if until is None else until):
            if job_id not in self.last_seq:
                return
            await self.ws.send_str(raw)
            if job_id in self.last_seq:  # it may have been dropped while we sent
                self.last_seq[job_id] += 1


#: close codes a browser sees: the token is missing, invalid or has expired
CLOSE_UNAUTHORIZED = 4401
AUTH_TIMEOUT = 10.0


async def websocket(request: web.Request) -> web.WebSocketResponse:
    """GET /ws: takes `subscribe` (job_id, after) and `unsubscribe` (job_id) messages.

    The token comes as `?token=`, an Authorization header, or a first `{"type": "auth"}`
    message; a foreign Origin is refused with 403 before the upgrade.
    """
    if not origin_allowed(request):
        raise Forbidden("this origin may not open the WebSocket", code="origin_not_allowed")
    settings = request.app[SETTINGS]
    ws = web.WebSocketResponse(heartbeat=settings.ws_heartbeat, compress=False, max_msg_size=65536)
    await ws.prepare(request)
    request.app[SOCKETS].add(ws)
    identity = await _authenticate(request, ws)
    if identity is None:
        return ws
    metrics = request.app[METRICS]
    conn = Connection(ws, request.app[HUB], request.app[STORE], settings.ws_queue_size, metrics)
    expiry = _close_at_expiry(ws, identity)
    metrics.connection_opened()
    try:
        async for msg in ws:
            command = await _command(conn, msg)
            if isinstance(command, Subscribe):
                await conn.subscribe(command.job_id, command.after, identity)
            elif isinstance(command, Unsubscribe):
                conn.unsubscribe(command.job_id)
                await conn.send_control("unsubscribed", job_id=command.job_id)
    finally:
        metrics.connection_closed()
        if expiry is not None:
            expiry.cancel()
        await conn.aclose()
    return ws


async def _command(conn: Connection, msg: WSMessage) -> Any:
    if msg.type is not WSMsgType.TEXT:
        await conn.send_control(
            "error", error={"code": "bad_message", "message": "send JSON text messages"}
        )
        return None
    try:
        return CLIENT_MESSAGE_ADAPTER.validate_json(msg.data)
    except ValidationError as exc:
        await conn.send_control(
            "error", error={"code": "bad_message", "message": _first_error(exc)}
        )
        return None


async def _authenticate(request: web.Request, ws: web.WebSocketResponse) -> Identity | None:
    """The caller's identity, or None after closing the socket with 4401 and the reason."""
    secret = request.app[SETTINGS].secret_key
    try:
        token = request.query.get("token") or bearer(request.headers.get("Authorization"))
        if not token:
            try:
                msg = await ws.receive(timeout=AUTH_TIMEOUT)
            except TimeoutError:
                raise Unauthorized("send the token first", code="token_missing") from None
            command = (
                CLIENT_MESSAGE_ADAPTER.validate_json(msg.data)
                if msg.type is WSMsgType.TEXT
                else None
            )
            if not isinstance(command, Authenticate):
                raise Unauthorized(
                    'the first message must be {"type": "auth"}', code="token_missing"
                )
            token = command.token
        return verify_token(secret, token)
    except (Unauthorized, ValidationError) as exc:
        code = exc.code if isinstance(exc, Unauthorized) else "token_missing"
        with contextlib.suppress(ConnectionError):
            await ws.send_str(
                json.dumps({"type": "error", "error": {"code": code, "message": str(exc)}})
            )
        await ws.close(code=CLOSE_UNAUTHORIZED, message=code.encode())
        return None


def _close_at_expiry(ws: web.WebSocketResponse, identity: Identity) -> asyncio.TimerHandle | None:
    """A timer (lighter than a task per socket) that closes the socket when its token expires."""
    if identity.expires_at is None:
        return None
    delay = max(0.0, identity.expires_at - time.time())

    closing: set[asyncio.Task[bool]] = set()  # a reference, until the close has run

    def close() -> None:
        task = asyncio.ensure_future(ws.close(code=CLOSE_UNAUTHORIZED, message=b"token_expired"))
        closing.add(task)
        task.add_done_callback(closing.discard)

    return asyncio.get_running_loop().call_later(delay, close)


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"])
    return f"{where}: {error['msg']}" if where else str(error["msg"])
