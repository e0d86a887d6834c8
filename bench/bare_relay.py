"""The bare chain's relay: one PSUBSCRIBE, a dict of job → sockets, `send_str` to each.

No event log, no outbox, no ordering or gap repair: the least an aiohttp relay can do.
`python -m bench.bare_relay --port P --redis URL`
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from collections import defaultdict
from collections.abc import AsyncIterator

from aiohttp import WSMsgType, web
from redis.asyncio import Redis

from .serving import serve_until_signal

CHANNELS = "bare:events:*"
PREFIX_LEN = len("bare:events:")
SUBSCRIBERS = web.AppKey("subscribers", defaultdict)


async def websocket(request: web.Request) -> web.WebSocketResponse:
    subscribers: defaultdict[str, set[web.WebSocketResponse]] = request.app[SUBSCRIBERS]
    ws = web.WebSocketResponse(compress=False)
    await ws.prepare(request)
    mine: set[str] = set()
    try:
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                continue
            command = json.loads(msg.data)
            job_id = str(command.get("job_id"))
            if command.get("type") == "subscribe":
                subscribers[job_id].add(ws)
                mine.add(job_id)
                await ws.send_str(json.dumps({"type": "subscribed", "job_id": job_id}))
            elif command.get("type") == "unsubscribe":
                subscribers[job_id].discard(ws)
                mine.discard(job_id)
    finally:
        for job_id in mine:
            subscribers[job_id].discard(ws)
    return ws


def relay_ctx(redis_url: str):  # type: ignore[no-untyped-def]
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        redis = Redis.from_url(redis_url)
        pubsub = redis.pubsub(ignore_subscribe_messages=True)
        await pubsub.psubscribe(CHANNELS)

        async def relay() -> None:
            subscribers = app[SUBSCRIBERS]
            async for message in pubsub.listen():
                if message["type"] != "pmessage":
                    continue
                job_id = message["channel"][PREFIX_LEN:].decode()
                data = message["data"].decode()
                for ws in list(subscribers.get(job_id, ())):
                    with contextlib.suppress(ConnectionError):
                        await ws.send_str(data)

        task = asyncio.create_task(relay())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await pubsub.aclose()
        await redis.aclose()

    return ctx


async def health(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", required=True)
    args = parser.parse_args()
    app = web.Application()
    app[SUBSCRIBERS] = defaultdict(set)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/", health)
    app.cleanup_ctx.append(relay_ctx(args.redis))
    asyncio.run(serve_until_signal(app, args.port))


if __name__ == "__main__":
    main()
