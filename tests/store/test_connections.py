"""Redis clients from settings pack their commands in C, byte for byte as redis-py would."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.exceptions import DataError

from formy_async.settings import Settings
from formy_async.store.connections import PackedConnection, pack_in_c, redis_from_settings


@pytest.mark.parametrize(
    "args",
    [
        ("SET", "k", "v"),
        ("EVALSHA", "a" * 40, 2, "formy:job:1", "formy:log:1", '{"ü": 1}', b"\x00\xff"),
        ("ZADD", "z", 0.1 + 0.2, "m", 1e20, "n", -0.0, "o", 10**30, "p"),
        ("CONFIG GET", "maxmemory"),  # a two-word name goes the way redis-py splits it
    ],
)
def test_a_command_is_packed_as_redis_py_packs_it(args: tuple[Any, ...]) -> None:
    assert b"".join(PackedConnection().pack_command(*args)) == b"".join(
        Connection().pack_command(*args)
    )


def test_a_value_redis_py_refuses_is_still_refused() -> None:
    with pytest.raises(DataError):
        PackedConnection().pack_command("SET", "k", True)


@pytest.mark.redis
async def test_a_client_from_settings_packs_in_c_and_is_understood(redis_url: str) -> None:
    client = redis_from_settings(Settings(redis_url=redis_url))  # type: ignore[arg-type]
    try:
        assert issubclass(client.connection_pool.connection_class, PackedConnection)
        script = client.register_script("return {KEYS[1], ARGV[1], ARGV[2]}")
        assert await script(keys=["k"], args=["ü", 1.5]) == [b"k", "ü".encode(), b"1.5"]
    finally:
        await client.aclose()


@pytest.mark.redis
async def test_a_client_made_elsewhere_packs_in_c_once_told_and_still_works(
    redis_url: str,
) -> None:
    client = Redis.from_url(redis_url)  # as arq makes its own
    try:
        await client.ping()
        await pack_in_c(client)
        await client.set("k", "v")
        assert await client.get("k") == b"v"
        pool = client.connection_pool
        assert pool.connection_class is PackedConnection
        assert all(isinstance(c, PackedConnection) for c in pool._available_connections)
    finally:
        await client.aclose()


async def _lent(client: Redis) -> PackedConnection:
    """One connection of the client's pool, taken out of it, connected and idle."""
    connection = await client.connection_pool.get_connection()
    assert isinstance(connection, PackedConnection)
    return connection


@pytest.mark.redis
async def test_an_idle_connection_is_fit_to_lend(redis_url: str) -> None:
    client = redis_from_settings(Settings(redis_url=redis_url))  # type: ignore[arg-type]
    try:
        connection = await _lent(client)
        assert await connection.can_read_destructive() is False
    finally:
        await client.aclose()


@pytest.mark.redis
async def test_a_connection_with_an_unread_reply_is_stale(redis_url: str) -> None:
    client = redis_from_settings(Settings(redis_url=redis_url))  # type: ignore[arg-type]
    try:
        connection = await _lent(client)
        await connection.send_command("PING")  # its reply is never read
        await asyncio.sleep(0.05)  # the event loop reads it off the socket
        assert await connection.can_read_destructive() is True
    finally:
        await client.aclose()


@pytest.mark.redis
async def test_a_connection_the_server_closed_is_stale(redis_url: str) -> None:
    client = redis_from_settings(Settings(redis_url=redis_url))  # type: ignore[arg-type]
    try:
        connection = await _lent(client)
        await connection.send_command("CLIENT", "ID")
        client_id = await connection.read_response()
        async with Redis.from_url(redis_url) as admin:
            await admin.client_kill_filter(_id=client_id)
        await asyncio.sleep(0.05)
        assert await connection.can_read_destructive() is True
    finally:
        await client.aclose()


@pytest.mark.redis
async def test_a_client_goes_on_after_the_server_closed_its_connection(redis_url: str) -> None:
    client = redis_from_settings(Settings(redis_url=redis_url))  # type: ignore[arg-type]
    try:
        await client.set("k", "v")
        async with Redis.from_url(redis_url) as admin:
            await admin.client_kill_filter(_type="normal", skipme=True)
        await asyncio.sleep(0.05)
        assert await client.get("k") == b"v"
    finally:
        await client.aclose()
