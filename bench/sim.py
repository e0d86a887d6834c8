"""The project's ComfyUI simulator in a process of its own: `python -m bench.sim --port P`.

`--trace` adds what the peers row reads from ComfyUI's own side: the wall-clock time each
`POST /prompt` arrived and was answered (queued), by prompt id, and a count of every request by
route, at `GET /bench/trace` (`POST /bench/trace/reset` empties both). The simulator itself is
not changed: the trace is one aiohttp middleware added in front of its routes.
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

from .serving import serve_until_signal

PROMPT_PATHS = frozenset({"/prompt", "/api/prompt"})


class Trace:
    """What the simulator was asked, and when it queued each prompt."""

    def __init__(self) -> None:
        #: prompt id → (time.time() the POST arrived, time.time() it was answered)
        self.prompts: dict[str, tuple[float, float]] = {}
        self.requests: Counter[str] = Counter()

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
        return response

    async def show(self, request: web.Request) -> web.Response:
        return web.json_response({"prompts": self.prompts, "requests": dict(self.requests)})

    async def reset(self, request: web.Request) -> web.Response:
        self.prompts.clear()
        self.requests.clear()
        return web.Response(status=204)


def build_app(config: SimulatorConfig, trace: bool) -> web.Application:
    app = create_app(config)
    if trace:
        recorder = Trace()
        app.middlewares.append(recorder.middleware)
        app.router.add_get("/bench/trace", recorder.show)
        app.router.add_post("/bench/trace/reset", recorder.reset)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--step-delay", type=float, default=0.0)
    parser.add_argument("--comfyui-version", default="0.3.64")
    parser.add_argument("--trace", action="store_true", help="serve /bench/trace (see above)")
    args = parser.parse_args()
    config = SimulatorConfig(
        step_delay=args.step_delay, previews=False, comfyui_version=args.comfyui_version
    )
    asyncio.run(serve_until_signal(build_app(config, args.trace), args.port))


if __name__ == "__main__":
    main()
