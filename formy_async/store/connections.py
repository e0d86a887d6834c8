"""Redis connections from settings: real ones (redis:// or rediss://) and the in-process fake."""

from __future__ import annotations

import asyncio
import json
from asyncio import StreamReader
from typing import Any

import hiredis
from arq.connections import ArqRedis, RedisSettings
from redis._parsers.hiredis import NOT_ENOUGH_DATA, _AsyncHiredisParser
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection, Connection, SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..settings import Settings


def job_serializer(data: dict[str, Any]) -> bytes:
    """arq job payloads as JSON: a pickle in Redis would let anyone who can write there run code.

    Results that are not JSON (an exception arq records) are stored as their repr.
    """
    return json.dumps(data, default=repr).encode()


def job_deserializer(raw: bytes) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(raw)
    return data


#: what a command retries on; OSError covers "connection refused" while Redis restarts, which
#: redis-py raises from connect() and retries only when it is listed here
RETRY_ON = [RedisConnectionError, RedisTimeoutError, OSError]


def _retry() -> Retry:
    # ~0.1 + 0.2 + 0.4 + 0.8 + 1 s × 26: rides out a Redis restart of up to about 25 s
    return Retry(ExponentialBackoff(cap=1, base=0.05), retries=30)


#: the most a request of the web process waits for one Redis command before it answers 503: a
#: browser or client must hear at once that the service cannot serve it, not after retries
WEB_REDIS_TIMEOUT = 1.5
#: how long after a request sends a write that write may still take effect; later, it does
#: nothing (see JobStore), so that a request answered 503 is never carried out afterwards. The
#: rest of WEB_REDIS_TIMEOUT is room for the reply of a write that was done.
WEB_WRITE_WINDOW = 1.0


def _brief_retry() -> Retry:
    # ~0.05 + 0.1 + 0.2 s: a dropped connection is reopened, an outage is reported
    return Retry(ExponentialBackoff(cap=0.2, base=0.05), retries=3)


class _HiredisPacking(AbstractConnection):
    """Commands packed by hiredis's C packer, as redis-py's synchronous client already does:
    its asyncio client packs in Python, about ten times slower, and every job event is a
    script call of some forty keys and arguments."""

    def pack_command(self, *args: Any) -> list[bytes]:
        name = args[0]
        if isinstance(name, str) and " " not in name and all(type(a) in _PLAIN for a in args):
            return [hiredis.pack_command(args)]
        return super().pack_command(*args)  # a two-word name, or a value it must refuse


#: what both packers encode alike (a bool or None is an error redis-py reports)
_PLAIN = frozenset({str, bytes, int, float})


class _NoWaitCheck(AbstractConnection):
    """The check redis-py's pool makes before lending a connection (is a reply or the end of
    the stream waiting to be read? then the connection is stale), made without waiting.

    redis-py makes it with a read under a zero timeout, which holds every command back by one
    turn of the event loop and costs about a fifth of a command's CPU. What it finds is what
    the event loop has read off the socket already: replies hiredis holds, bytes in the
    stream's buffer, or its end.
    """

    async def can_read_destructive(self) -> bool:
        parser = self._parser
        stream = getattr(parser, "_stream", None)
        if not isinstance(parser, _AsyncHiredisParser) or not isinstance(stream, StreamReader):
            return bool(await super().can_read_destructive())  # type: ignore[no-untyped-call]
        if not parser._connected or parser._reader is None:
            raise RedisConnectionError("Connection closed by server.")
        if parser._reader.gets() is not NOT_ENOUGH_DATA:
            return True
        return bool(stream._buffer) or stream.at_eof()


class PackedConnection(_NoWaitCheck, _HiredisPacking, Connection):
    pass


class PackedSSLConnection(_NoWaitCheck, _HiredisPacking, SSLConnection):
    pass


_PACKED: dict[type[AbstractConnection], type[AbstractConnection]] = {
    Connection: PackedConnection,
    SSLConnection: PackedSSLConnection,
}


def redis_from_settings(settings: Settings, *, patient: bool = True) -> Redis:
    """A client for the configured Redis.

    A patient one (the worker's) rides out outages of up to about 25 s by retrying; the web
    process's gives up within WEB_REDIS_TIMEOUT, so that a request during an outage answers
    `503 redis_unavailable` at once.
    """
    options: dict[str, Any] = {}
    if settings.redis_url.scheme == "rediss" and settings.redis_ssl_cert_reqs == "none":
        options["ssl_cert_reqs"] = "none"
    if not patient:
        options["socket_timeout"] = WEB_REDIS_TIMEOUT
    client: Redis = Redis.from_url(
        str(settings.redis_url),
        retry=_retry() if patient else _brief_retry(),
        # a command that timed out is not sent again by the impatient: that is the outage
        retry_on_error=list(RETRY_ON) if patient else [RedisConnectionError, OSError],
        socket_connect_timeout=5 if patient else 0.5,
        health_check_interval=15,
        **options,
    )
    _pack(client)
    return client


async def pack_in_c(client: Redis) -> None:
    """Make a client made elsewhere (arq's) pack its commands in C (see _HiredisPacking): the
    connections it opened already are closed and dropped, the next ones are of the packing
    kind. Only while nothing else uses the client (at start-up)."""
    if _pack(client):
        await client.connection_pool.disconnect()
        client.connection_pool.reset()  # type: ignore[no-untyped-call]


def _pack(client: Redis) -> bool:
    """Give the client's pool the packing kind of its connection class; False when it has no
    such kind (a unix socket, an in-process fake) or has it already."""
    pool = client.connection_pool
    packed = _PACKED.get(pool.connection_class)
    if packed is not None:
        pool.connection_class = packed
    return packed is not None


def arq_redis_settings(settings: Settings) -> RedisSettings:
    rs = RedisSettings.from_dsn(str(settings.redis_url))
    if rs.ssl and settings.redis_ssl_cert_reqs == "none":
        rs.ssl_cert_reqs = "none"  # from_dsn drops the URL's query, so set it here
    rs.ssl_check_hostname = rs.ssl and settings.redis_ssl_cert_reqs == "required"
    rs.retry_on_timeout = True
    rs.retry_on_error = list(RETRY_ON)
    rs.retry = _retry()
    rs.conn_retries = 30
    rs.conn_retry_delay = 1
    return rs


def arq_pool(redis: Redis) -> ArqRedis:
    """An arq handle sharing `redis`'s connection pool, with JSON job payloads."""
    return ArqRedis(
        connection_pool=redis.connection_pool,
        job_serializer=job_serializer,
        job_deserializer=job_deserializer,
    )


def fake_redis(server: Any) -> Redis:
    """A client of an in-process fakeredis server (the embedded default)."""
    from fakeredis import FakeAsyncRedis

    client: Redis = FakeAsyncRedis(server=server)
    return client


def task_cancelling() -> bool:
    """Whether this task was cancelled, for a loop around Redis calls to check each turn.

    redis-py sends a command through `asyncio.wait_for` when a socket timeout is set (the web
    process's client), and on Python 3.11 that returns a send that is done as the task is
    cancelled and drops the cancel: a loop around such calls would run on, and its shutdown wait.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def text(value: bytes | str) -> str:
    """A Redis answer as text, whether the client decodes answers or not."""
    return value.decode() if isinstance(value, bytes) else value
