"""The browser WebSocket: subscribe to jobs; every event after a seq, then live ones."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Awaitable
from typing import Any

import structlog
from aiohttp import WSMessage, WSMsgType, web
from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..auth import Identity, bearer
from ..errors import OriginNotAllowed, RedisUnavailable, TokenMissing, Unauthorized
from ..models import CLIENT_MESSAGE_ADAPTER, Authenticate, Subscribe, Unsubscribe
from ..store.hub import RESYNC, EventHub, event_ts
from ..store.jobs import JobStore
from .context import HUB, METRICS, SETTINGS, SOCKETS, STORE, TOKENS
from .instruments import WebMetrics
from .security import origin_allowed
from .transport import bound_unsent, reset

log = structlog.get_logger()

_SYNC = RESYNC  # queue marker: send whatever the log holds after the last seq sent


class Connection:
    """One browser socket: its subscriptions, a bounded outbox and the task that drains it.

    A socket is idle most of its life, so it holds only what it must: the outbox, the overflow
    notice and the writer task exist while there is something to send, and the connection is
    itself the sink the hub calls (no bound method per subscription). One sender at a time
    writes to the socket: the writer task, or the handler while it sends a new subscription's
    log.

    A client that stops reading costs a bounded amount: what its socket takes before a send
    waits is bounded (`bound_unsent`), then the outbox fills and overflows; and a send that
    waits `send_timeout` seconds with nothing taken resets the socket (a timer, not a task,
    and only while a send may wait).

    Every job's events reach the socket in seq order, each exactly once: live events are
    deduplicated by seq, and a gap (a missed publish, a late subscription) is filled from the
    job's event log before the live event is sent.
    """

    __slots__ = (
        "hub",
        "last_seq",
        "metrics",
        "outbox",
        "overflowed",
        "send_timeout",
        "sending",
        "sends",
        "size",
        "stall",
        "steady_at",
        "store",
        "transport",
        "writer",
        "ws",
    )

    def __init__(
        self,
        ws: web.WebSocketResponse,
        hub: EventHub,
        store: JobStore,
        size: int,
        metrics: WebMetrics | None = None,
        *,
        send_timeout: float = 10.0,
        transport: asyncio.Transport | None = None,
    ):
        self.ws = ws
        self.transport = transport  # aborted when a send stalls (None: there is none to abort)
        self.send_timeout = send_timeout
        self.sends = 0  # sends under way
        self.steady_at = 0.0  # while the stall check runs: when it began, or a send last ended
        self.stall: asyncio.TimerHandle | None = None
        self.metrics = metrics
        self.hub = hub
        self.store = store
        self.last_seq: dict[str, int] = {}
        self.size = size
        self.outbox: deque[tuple[str, int, str]] | None = None
        self.overflowed: dict[str, int] | None = None
        self.writer: asyncio.Task[None] | None = None
        self.sending = False  # the writer, or the handler sending a log, is at work

    # --- called by the hub (must not block) -----------------------------------------------------

    def push(self, job_id: str, seq: int, raw: str) -> None:
        if job_id not in self.last_seq:
            return  # not followed yet (its log is read next), or no longer
        self._enqueue(job_id, seq, raw)
        if not self.sending:
            self._start_writer()

    __call__ = push  # as the hub's sink

    def _enqueue(self, job_id: str, seq: int, raw: str) -> None:
        if self.outbox is None:
            self.outbox = deque()
        if len(self.outbox) >= self.size:
            self._overflow()
        else:
            self.outbox.append((job_id, seq, raw))

    def _start_writer(self) -> None:
        self.sending = True
        self.writer = asyncio.create_task(self._drain(), name="ws-writer")

    def _overflow(self) -> None:
        # a client too slow for its events loses its subscriptions, not the server's memory;
        # it is told the last seq it got for each job and resubscribes from there
        if self.last_seq:
            self.overflowed = {**(self.overflowed or {}), **self.last_seq}
        for job_id in list(self.last_seq):
            self.unsubscribe(job_id)
        if self.outbox is not None:
            self.outbox.clear()

    # --- called by the handler ----------------------------------------------------------------

    async def subscribe(self, job_id: str, after: int, identity: Identity) -> None:
        # Redis is read in a turn at the hub's gate and the socket written after it: a slow
        # client must not hold up everyone else's subscriptions
        async with self.hub.reads:
            owner = await self.store.owner(job_id)
            allowed = owner is not None and (identity.admin or owner == identity.user)
            backlog = await self._follow(job_id, after) if allowed else None
        if not allowed:
            await self.send_error("job_not_found", f"no job with id {job_id!r}", job_id=job_id)
            return
        await self.send_control("subscribed", job_id=job_id, after=after)
        if backlog is None:  # the writer is at work: it sends the log in its turn
            self.push(job_id, _SYNC, "")
        else:
            await self._send_backlog(job_id, backlog)

    async def _follow(self, job_id: str, after: int) -> list[str] | None:
        """Subscribe from `after`; the log after it if the handler is to send it itself.

        It is when no writer is at work (live events then wait in the outbox until the log is
        out): a writer task per subscription would cost more than the sync, and when thousands
        of browsers subscribe at once, that peak stays in the process's RSS.
        """
        if self.overflowed is not None:
            self.overflowed.pop(job_id, None)
        if job_id not in self.last_seq:
            self.hub.subscribe(job_id, self)
            try:
                await self.hub.live(job_id)  # its log is read once its events flow
            except BaseException:  # the handler was cancelled: no sink is left behind
                self.hub.unsubscribe(job_id, self)
                raise
        self.last_seq[job_id] = after
        if self.sending:
            return None
        self.sending = True
        try:
            return await self.store.events(job_id, after)
        except BaseException:
            self.sending = False
            raise

    async def _send_backlog(self, job_id: str, backlog: list[str]) -> None:
        try:
            with contextlib.suppress(ConnectionError):
                await self._send_log(job_id, backlog)
        finally:
            self.sending = False
        if self.outbox or self.overflowed:  # live events that came meanwhile
            self._start_writer()

    def unsubscribe(self, job_id: str) -> None:
        if self.last_seq.pop(job_id, None) is not None:
            self.hub.unsubscribe(job_id, self)

    async def send_error(self, code: str, message: str, **fields: Any) -> None:
        await self.send_control("error", **fields, error={"code": code, "message": message})

    async def send_control(self, type_: str, **fields: Any) -> None:
        with contextlib.suppress(ConnectionError):
            await self._write(json.dumps({"type": type_, **fields}))

    async def aclose(self) -> None:
        if self.stall is not None:
            self.stall.cancel()
            self.stall = None
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
                while True:
                    if self.outbox:
                        await self._send(*self.outbox.popleft())
                    elif self.overflowed:
                        last_seq, self.overflowed = self.overflowed, None
                        await self.send_control("overflow", last_seq=last_seq)
                    else:
                        self.outbox = self.overflowed = None
                        return
        finally:
            self.sending = False
            self.writer = None

    async def _send(self, job_id: str, seq: int, raw: str) -> None:
        last = self.last_seq.get(job_id)
        if last is None or (seq != _SYNC and seq <= last):
            return  # unsubscribed meanwhile, or already sent
        if seq == _SYNC or seq > last + 1:
            missed = await self._read_log(job_id, last, -1 if seq == _SYNC else seq - 1)
            await self._send_log(job_id, missed)
            if seq == _SYNC or job_id not in self.last_seq:
                return  # or it was dropped (an overflow) while the gap was filled
        # counted as sent before the send waits: the frame is handed to the socket at once,
        # and an overflow meanwhile must not tell the client to ask for it again
        self.last_seq[job_id] = seq
        await self._write(raw)
        if self.metrics is not None:
            self.metrics.event_sent(event_ts(raw))

    async def _read_log(self, job_id: str, after: int, until: int) -> list[str]:
        async with self.hub.reads:
            return await self.store.events(job_id, after, until)

    async def _send_log(self, job_id: str, events: list[str]) -> None:
        """Send events read from the log, which follow the last seq sent when it was read."""
        for raw in events:
            if job_id not in self.last_seq:  # dropped (an overflow) while we sent
                return
            self.last_seq[job_id] += 1  # counted before the send waits, as in `_send`
            await self._write(raw)

    # --- every send, and the check that the client takes them -------------------------------

    async def _write(self, data: str) -> None:
        if self.stall is None and self._may_wait(data):
            self.steady_at = time.monotonic()
            loop = asyncio.get_running_loop()
            self.stall = loop.call_later(self.send_timeout, self._check_stall)
        self.sends += 1
        try:
            await self.ws.send_str(data)
        finally:
            self.sends -= 1
        if self.stall is not None:
            self.steady_at = time.monotonic()

    def _may_wait(self, data: str) -> bool:
        """Whether this send may wait for the client, so the stall check must run.

        Only then: a timer per send would be 10,000 of them when as many sockets subscribe.
        A send waits when the transport's buffer is full; it buffers only what the kernel did
        not take, so an empty one means the client keeps up (unless this message alone fills it).
        """
        if self.transport is None:
            return False  # the client is gone: the send fails at once
        if self.transport.get_write_buffer_size():
            return True
        return len(data) >= self.transport.get_write_buffer_limits()[1]

    def _check_stall(self) -> None:
        """Reset the socket if a send has waited send_timeout with nothing taken meanwhile.

        The timer lives while sends may wait; the next send that may wait starts it again.
        """
        self.stall = None
        if self.sends == 0:
            return
        waited = time.monotonic() - self.steady_at
        if waited < self.send_timeout:
            loop = asyncio.get_running_loop()
            self.stall = loop.call_later(self.send_timeout - waited, self._check_stall)
            return
        log.info("ws_send_timeout", waited=round(waited, 1), subscriptions=len(self.last_seq))
        if self.transport is not None:
            reset(self.transport)


#: close codes a browser sees: the token is missing, invalid or has expired
CLOSE_UNAUTHORIZED = 4401
AUTH_TIMEOUT = 10.0


async def websocket(request: web.Request) -> web.WebSocketResponse:
    """GET /ws: takes `subscribe` (job_id, after) and `unsubscribe` (job_id) messages.

    The token comes as `?token=`, an Authorization header, or a first `{"type": "auth"}`
    message; a foreign Origin is refused with 403 before the upgrade.
    """
    if not origin_allowed(request):
        raise OriginNotAllowed("this origin may not open the WebSocket")
    settings = request.app[SETTINGS]
    ws = web.WebSocketResponse(
        heartbeat=settings.ws_heartbeat,
        compress=False,
        max_msg_size=65536,
        writer_limit=settings.ws_send_buffer,  # how often a send checks the transport is not full
    )
    await ws.prepare(request)
    bound_unsent(request.transport, settings.ws_send_buffer)
    request.app[SOCKETS].add(ws)
    identity = await _authenticate(request, ws)
    if identity is None:
        return ws
    metrics = request.app[METRICS]
    conn = _connection(request, ws)
    expiry = _close_at_expiry(ws, identity)
    metrics.connection_opened()
    try:
        async for msg in ws:
            try:
                await _action(conn, msg, identity)
            except (RedisConnectionError, RedisTimeoutError):
                await conn.send_error(
                    RedisUnavailable.code, "the service's Redis does not answer: try again shortly"
                )
            except Exception:  # past the upgrade, the error middleware would write an HTTP 500
                log.exception("ws_message_failed", user=identity.user)
                await conn.send_error("internal_error", "the server failed to handle the message")
            del msg  # or the last message stays referenced for as long as the socket idles
    finally:
        metrics.connection_closed()
        if expiry is not None:
            expiry.cancel()
        await conn.aclose()
    return ws


def _connection(request: web.Request, ws: web.WebSocketResponse) -> Connection:
    settings = request.app[SETTINGS]
    return Connection(
        ws,
        request.app[HUB],
        request.app[STORE],
        settings.ws_queue_size,
        request.app[METRICS],
        send_timeout=settings.ws_send_timeout,
        transport=request.transport,
    )


def _action(conn: Connection, msg: WSMessage, identity: Identity) -> Awaitable[None]:
    """What a client message asks for, as a coroutine that holds only the fields it needs.

    A subscription may wait its turn for a while (thousands arrive at once after a restart),
    and the parsed message would cost more than the wait itself.
    """
    if msg.type is not WSMsgType.TEXT:
        return conn.send_error("bad_message", "send JSON text messages")
    try:
        command = CLIENT_MESSAGE_ADAPTER.validate_json(msg.data)
    except ValidationError as exc:
        return conn.send_error("bad_message", _first_error(exc))
    if isinstance(command, Subscribe):
        return conn.subscribe(command.job_id, command.after, identity)
    if isinstance(command, Unsubscribe):
        return _unsubscribe(conn, command.job_id)
    return _ignore()  # a second `auth` message


async def _unsubscribe(conn: Connection, job_id: str) -> None:
    conn.unsubscribe(job_id)
    await conn.send_control("unsubscribed", job_id=job_id)


async def _ignore() -> None:
    pass


async def _authenticate(request: web.Request, ws: web.WebSocketResponse) -> Identity | None:
    """The caller's identity, or None after closing the socket with 4401 and the reason."""
    tokens = request.app[TOKENS]
    try:
        token = request.query.get("token") or bearer(request.headers.get("Authorization"))
        if not token:
            try:
                msg = await ws.receive(timeout=AUTH_TIMEOUT)
            except TimeoutError:
                raise TokenMissing("send the token first") from None
            command = (
                CLIENT_MESSAGE_ADAPTER.validate_json(msg.data)
                if msg.type is WSMsgType.TEXT
                else None
            )
            if not isinstance(command, Authenticate):
                raise TokenMissing('the first message must be {"type": "auth"}')
            token = command.token
        return tokens(token)
    except (Unauthorized, ValidationError) as exc:
        code = exc.code if isinstance(exc, Unauthorized) else TokenMissing.code
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
    return asyncio.get_running_loop().call_later(delay, _expire, ws)


#: the closes that expired tokens started, referenced until they have run
_closing: set[asyncio.Task[bool]] = set()


def _expire(ws: web.WebSocketResponse) -> None:
    task = asyncio.create_task(ws.close(code=CLOSE_UNAUTHORIZED, message=b"token_expired"))
    _closing.add(task)
    task.add_done_callback(_closing.discard)


def _first_error(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"])
    return f"{where}: {error['msg']}" if where else str(error["msg"])
