"""The submission baseline: an aiohttp handler that reads the JSON body and does one arq enqueue.

`python -m bench.bare_enqueue --port P --redis URL`
"""

from __future__ import annotations

import argparse
import asyncio
import uuid
from collections.abc import AsyncIterator

from aiohttp import web
from arq.connections import ArqRedis, RedisSettings, create_pool

from .serving import serve_until_signal

ARQ = web.AppKey("arq", ArqRedis)
QUEUE = "bench:bare-enqueue"


async def submit(request: web.Request) -> web.Response:
    body = await request.json()
    job_id = uuid.uuid4().hex
    await request.app[ARQ].enqueue_job("run_job", job_id, _job_id=job_id, _queue_name=QUEUE)
    return web.json_response({"id": job_id, "workflow": body.get("workflow")}, status=202)


async def health(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def arq_ctx(redis_url: str):  # type: ignore[no-untyped-def]
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        app[ARQ] = await create_pool(RedisSettings.from_dsn(redis_url))
        yield
        await app[ARQ].aclose()

    return ctx


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis", required=True)
    args = parser.parse_args()
    app = web.Application()
    app.router.add_post("/api/jobs", submit)
    app.router.add_get("/", health)
    app.cleanup_ctx.append(arq_ctx(args.redis))
    asyncio.run(serve_until_signal(app, args.port))


if __name__ == "__main__":
    main()
