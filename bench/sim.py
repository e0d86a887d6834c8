"""The project's ComfyUI simulator in a process of its own: `python -m bench.sim --port P`.

`--trace` adds what the peers and trace rows read from ComfyUI's own side: the wall-clock time
each `POST /prompt` arrived and was answered (queued), by prompt id; the same for each `/view`,
by filename; a count of every request by route; and how many models it had to load, at
`GET /bench/trace` (`POST /bench/trace/reset` empties them). The simulator itself is not
changed: the trace is one aiohttp middleware added in front of its routes, and a count around
its model memory's loads.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter

from aiohttp import web
from aiohttp.typedefs import Handler

from formy_async.simulator import SimulatorConfig, create_app
from formy_async.simulator.nodes import ModelMemory
from formy_async.simulator.state import SIMULATOR

from .serving import serve_until_signal

PROMPT_PATHS = frozenset({"/prompt", "/api/prompt"})
VIEW_PATHS = frozenset({"/view", "/api/view"})


class Trace:
    """What the simulator was asked, and when it queued each prompt."""

    def __init__(self) -> None:
        #: prompt id → (time.time() the POST arrived, time.time() it was answered)
        self.prompts: dict[str, tuple[float, float]] = {}
        #: `/view` filename → (time.time() the GET arrived, time.time() its handler returned)
        self.views: dict[str, tuple[float, float]] = {}
        self.requests: Counter[str] = Counter()
        self.loads = 0  # models loaded that were not in memory: what a switch costs

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/bench/"):
            return await handler(request)
        arrived = time.time()
        route = request.match_info.route.resource
        self.requests[f"{request.method} {route.canonical if route else request.path}"] += 1
        response = await handler(request)
        if request.method == "POST" and request.path in PROMPT_PATHS and response.status == 200:
            body = getattr(response, "body", None)
            if isinstance(body, bytes):
                prompt_id = json.loads(body).get("prompt_id")
                if isinstance(prompt_id, str):
                    self.prompts[prompt_id] = (arrived, time.time())
        elif request.path in VIEW_PATHS and "filename" in request.query:
            self.views[request.query["filename"]] = (arrived, time.time())
        return response

    async def show(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "prompts": self.prompts,
                "views": self.views,
                "requests": dict(self.requests),
                "loads": self.loads,
            }
        )

    async def reset(self, request: web.Request) -> web.Response:
        self.prompts.clear()
        self.views.clear()
        self.requests.clear()
        self.loads = 0
        return web.Response(status=204)


def build_app(config: SimulatorConfig, trace: bool) -> web.Application:
    app = create_app(config)
    if trace:
        recorder = Trace()
        app.middlewares.append(recorder.middleware)
        _count_loads(app[SIMULATOR].env.memory, recorder)
        app.router.add_get("/bench/trace", recorder.show)
        app.router.add_post("/bench/trace/reset", recorder.reset)
    return app


def _count_loads(memory: ModelMemory, trace: Trace) -> None:
    load = memory.load

    async def counted(name: str, config: SimulatorConfig) -> None:
        if name not in memory.loaded:
            trace.loads += 1
        await load(name, config)

    memory.load = counted  # type: ignore[method-assign]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--step-delay", type=float, default=0.0)
    parser.add_argument("--comfyui-version", default="0.3.64")
    parser.add_argument("--trace", action="store_true", help="serve /bench/trace (see above)")
    parser.add_argument("--model-load-delay", type=float, default=0.0)
    parser.add_argument("--resident-models", type=int, default=1)
    parser.add_argument("--checkpoints", help="comma-separated checkpoint names it has")
    args = parser.parse_args()
    extra = {"checkpoints": args.checkpoints.split(",")} if args.checkpoints else {}
    config = SimulatorConfig(
        step_delay=args.step_delay,
        previews=False,
        comfyui_version=args.comfyui_version,
        model_load_delay=args.model_load_delay,
        resident_models=args.resident_models,
        **extra,
    )
    asyncio.run(serve_until_signal(build_app(config, args.trace), args.port))


if __name__ == "__main__":
    main()
