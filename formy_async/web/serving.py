"""Serving the app: aiohttp's runner, with a bound on how long a request's headers may take."""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_server import Server

from ..errors import RequestTimeout
from ..heap import freeze_startup_heap
from ..settings import Settings

#: seconds an idle kept-alive connection stays open: what `web.run_app` uses (server.py ran on
#: it before), longer than a load balancer's idle timeout (60 s on AWS's) as the server behind
#: one must be, or the balancer reuses connections the server is closing
KEEPALIVE_TIMEOUT = 75.0


class HeaderClock:
    """When each connection's request headers are due, and one timer for the earliest of them.

    Every deadline is its start plus the same timeout, so the order connections start in is the
    order they fall due: a dict is the queue. One timer for the process, not one per connection:
    10,000 browsers connecting at once would leave 10,000 timer handles' worth in its RSS.
    """

    def __init__(self, timeout: float, loop: asyncio.AbstractEventLoop) -> None:
        self.timeout = timeout
        self._loop = loop
        self._due: dict[HeaderTimeoutHandler, float] = {}
        self._timer: asyncio.TimerHandle | None = None

    def start(self, conn: HeaderTimeoutHandler) -> None:
        deadline = self._loop.time() + self.timeout
        self._due[conn] = deadline
        if self._timer is None:
            self._timer = self._loop.call_at(deadline, self._expire)

    def stop(self, conn: HeaderTimeoutHandler) -> None:
        self._due.pop(conn, None)

    def running(self, conn: HeaderTimeoutHandler) -> bool:
        return conn in self._due

    def _expire(self) -> None:
        self._timer = None
        now = self._loop.time()
        while self._due:
            conn, deadline = next(iter(self._due.items()))
            if deadline > now:
                self._timer = self._loop.call_at(deadline, self._expire)
                return
            del self._due[conn]
            conn.headers_late()


class HeaderTimeoutHandler(RequestHandler):
    """aiohttp's connection protocol, closing a connection whose request headers come too slowly.

    As nginx's `client_header_timeout`: a new connection has `header_timeout` seconds to send
    its first request's headers; on a kept-alive one, the clock starts at the next request's
    first byte (until then the connection idles under the keep-alive timeout). Once a request's
    headers are in, the clock stops: its body has a deadline of its own (`bodies`), and a
    WebSocket or a long response runs as long as its handler does.
    """

    __slots__ = ("clock",)

    def __init__(self, manager: Server, *, clock: HeaderClock, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.clock = clock

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.clock.start(self)

    def data_received(self, data: bytes) -> None:
        parsed = self._request_count
        super().data_received(data)
        if self._request_count != parsed:  # a request's headers are complete
            self.clock.stop(self)
        elif data and self._waiter is not None and not self.clock.running(self):
            self.clock.start(self)  # the first bytes of the next request on a kept-alive one

    def connection_lost(self, exc: BaseException | None) -> None:
        self.clock.stop(self)
        super().connection_lost(exc)

    def headers_late(self) -> None:
        """Called by the clock: answer 408 and close, unless a request is being handled."""
        if self._waiter is None or self.transport is None:
            return
        timeout = RequestTimeout(
            f"the request headers did not arrive within {self.clock.timeout:g} s"
        )
        self.transport.write(_timeout_response(timeout))
        self.force_close()


def _timeout_response(error: RequestTimeout) -> bytes:
    """The 408 as the error middleware would answer it (the request never got that far)."""
    body = json.dumps({"error": error.to_dict()})
    return (
        "HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}"
    ).encode()


class _Server(Server):
    """aiohttp's low-level server, making `HeaderTimeoutHandler`s for its connections."""

    def __init__(self, made: Server, header_timeout: float) -> None:
        super().__init__(
            made.request_handler,
            request_factory=made.request_factory,
            handler_cancellation=made.handler_cancellation,
            loop=made._loop,
            **made._kwargs,
        )
        self.clock = HeaderClock(header_timeout, self._loop)

    def __call__(self) -> RequestHandler:
        return HeaderTimeoutHandler(self, loop=self._loop, clock=self.clock, **self._kwargs)


class GuardedRunner(web.AppRunner):
    """`web.AppRunner` whose connections time out slow request headers (`HeaderTimeoutHandler`)."""

    __slots__ = ("_header_timeout",)

    def __init__(self, app: web.Application, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._header_timeout = header_timeout

    async def _make_server(self) -> Server:
        return _Server(await super()._make_server(), self._header_timeout)


def app_runner(app: web.Application, settings: Settings, **kwargs: Any) -> GuardedRunner:
    """The runner both entry points serve `app` with (`server.py`, `formy-async run`)."""
    return GuardedRunner(
        app,
        header_timeout=settings.header_timeout,
        keepalive_timeout=KEEPALIVE_TIMEOUT,
        **kwargs,
    )


async def serve_app(app: web.Application, settings: Settings, *, shutdown_timeout: float) -> None:
    """Serve `app` on the settings' host and port until SIGINT or SIGTERM, then stop it cleanly.

    Once it is set up, what start-up made is left out of later collections (`freeze_startup_heap`).
    """
    runner = app_runner(app, settings, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    freeze_startup_heap()
    try:
        await web.TCPSite(runner, settings.host, settings.port).start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()
