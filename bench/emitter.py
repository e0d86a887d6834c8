"""A bench ComfyUI: the protocol subset the worker uses, every prompt run at once, sends logged.

Unlike ComfyUI (and the project's simulator) it runs any number of prompts concurrently, like
a farm of GPUs behind one address, so one worker can hold hundreds of live sessions. Each
`progress` message's send time (time.monotonic(), one clock for every process on this host)
is logged under (prompt_id, node, value); GET /bench/sends returns the log, which the bench
joins with the browser-side receive times.

`python -m bench.emitter --port P [--port P2 …]`: each port can be listed as its own backend
(COMFYUI_URL takes a list; each backend holds at most 64 prompts at once).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import time
from typing import Any

from aiohttp import WSMsgType, web

from .serving import serve_until_signal


class Emitter:
    def __init__(self) -> None:
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.running: dict[str, asyncio.Task[None]] = {}
        self.history: dict[str, dict[str, Any]] = {}
        self.sends: dict[str, list[tuple[str, float, float]]] = {}

    async def send(self, client_id: str, type_: str, data: dict[str, Any]) -> None:
        ws = self.sockets.get(client_id)
        if ws is not None and not ws.closed:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await ws.send_str(json.dumps({"type": type_, "data": data}))

    async def run(self, graph: dict[str, Any], client_id: str, prompt_id: str) -> None:
        log = self.sends.setdefault(prompt_id, [])
        await self.send(client_id, "execution_start", {"prompt_id": prompt_id})
        for node_id in sorted(graph, key=lambda n: int(n) if n.isdigit() else 0):
            message = {"node": node_id, "display_node": node_id, "prompt_id": prompt_id}
            await self.send(client_id, "executing", message)
            inputs = graph[node_id].get("inputs", {})
            steps = int(inputs.get("steps", 0))
            if not steps:
                continue
            delay = float(inputs.get("delay", 0))
            # a random phase per prompt, so that sessions do not step in lockstep
            await asyncio.sleep(float(inputs.get("start_delay", 0)) + random.uniform(0, delay))
            for step in range(1, steps + 1):
                await asyncio.sleep(delay)
                sent = time.monotonic()
                log.append((node_id, float(step), sent))
                data = {"value": step, "max": steps, "prompt_id": prompt_id, "node": node_id}
                await self.send(client_id, "progress", data)
        self.history[prompt_id] = {
            "prompt": [0, prompt_id, graph, {"client_id": client_id}, []],
            "outputs": {},
            "status": {
                "status_str": "success",
                "completed": True,
                "messages": [["execution_success", {"prompt_id": prompt_id}]],
            },
        }
        self.running.pop(prompt_id, None)
        await self.send(client_id, "executing", {"node": None, "prompt_id": prompt_id})


EMITTER = web.AppKey("emitter", Emitter)


async def websocket(request: web.Request) -> web.WebSocketResponse:
    em = request.app[EMITTER]
    ws = web.WebSocketResponse(compress=False)
    await ws.prepare(request)
    client_id = request.query.get("clientId", "")
    em.sockets[client_id] = ws
    try:
        async for msg in ws:
            if msg.type is WSMsgType.ERROR:
                break
    finally:
        if em.sockets.get(client_id) is ws:
            del em.sockets[client_id]
    return ws


async def post_prompt(request: web.Request) -> web.Response:
    em = request.app[EMITTER]
    body = await request.json()
    prompt_id, client_id = body["prompt_id"], body.get("client_id", "")
    em.running[prompt_id] = asyncio.create_task(em.run(body["prompt"], client_id, prompt_id))
    return web.json_response({"prompt_id": prompt_id, "number": 0, "node_errors": {}})


async def get_history(request: web.Request) -> web.Response:
    prompt_id = request.match_info["prompt_id"]
    entry = request.app[EMITTER].history.get(prompt_id)
    return web.json_response({} if entry is None else {prompt_id: entry})


async def get_queue(request: web.Request) -> web.Response:
    running = [[0, pid, {}, {}, []] for pid in request.app[EMITTER].running]
    return web.json_response({"queue_running": running, "queue_pending": []})


async def post_queue(request: web.Request) -> web.Response:
    return web.json_response({})


async def post_interrupt(request: web.Request) -> web.Response:
    body = await request.json() if request.can_read_body else {}
    task = request.app[EMITTER].running.pop(str(body.get("prompt_id")), None)
    if task is not None:
        task.cancel()
    return web.json_response({})


async def system_stats(request: web.Request) -> web.Response:
    return web.json_response({"system": {"comfyui_version": "bench"}, "devices": []})


async def models(request: web.Request) -> web.Response:
    return web.json_response(["sd_xl_base_1.0.safetensors"])


async def get_sends(request: web.Request) -> web.Response:
    return web.json_response(request.app[EMITTER].sends)


async def reset_sends(request: web.Request) -> web.Response:
    em = request.app[EMITTER]
    em.sends.clear()
    em.history.clear()
    return web.json_response({})


def create_app() -> web.Application:
    app = web.Application()
    app[EMITTER] = Emitter()
    app.router.add_get("/ws", websocket)
    app.router.add_post("/prompt", post_prompt)
    app.router.add_get("/history/{prompt_id}", get_history)
    app.router.add_get("/queue", get_queue)
    app.router.add_post("/queue", post_queue)
    app.router.add_post("/interrupt", post_interrupt)
    app.router.add_get("/system_stats", system_stats)
    app.router.add_get("/models/{folder}", models)
    app.router.add_get("/bench/sends", get_sends)
    app.router.add_post("/bench/reset", reset_sends)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, action="append", required=True)
    asyncio.run(serve_until_signal(create_app(), *parser.parse_args().port))


if __name__ == "__main__":
    main()
