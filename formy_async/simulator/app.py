"""The aiohttp application: middlewares (Origin check, 413 text), lifecycle, and how to run it."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import shutil
import tempfile
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import structlog
from aiohttp import web

from .config import SimulatorConfig
from .engine import Engine
from .files import Dirs
from .hub import Hub
from .info import server_features
from .nodes import Env, NodeDef
from .nodes_audio import audio_nodes
from .nodes_control import CONTROL_NODES
from .nodes_core import CORE_NODES
from .nodes_image import IMAGE_NODES
from .nodes_media import animation_nodes
from .nodes_video import video_nodes
from .prompt_queue import PromptQueue
from .routes import add_routes
from .state import SIMULATOR, Simulator

log = structlog.get_logger()

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _is_loopback(hostname: str) -> bool:
    # ComfyUI resolves names through DNS; the simulator only knows localhost, to avoid blocking.
    if hostname == "localhost" or hostname.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def origin_mismatch(host: str, origin: str) -> bool:
    """ComfyUI's rule: a loopback Host whose Origin differs (host:port) is refused."""
    host_domain: str | None = host.lower()
    parsed_origin = urllib.parse.urlparse(origin)
    origin_domain: str | None = parsed_origin.netloc.lower()
    parsed_host = urllib.parse.urlsplit("//" + (host_domain or ""))
    loopback = bool(parsed_host.hostname) and _is_loopback(parsed_host.hostname or "")
    if parsed_origin.port is None:
        host_domain = parsed_host.hostname
    if parsed_host.port is None:
        origin_domain = parsed_origin.hostname
    if not (loopback and host_domain and origin_domain):
        return False
    return host_domain != origin_domain


@web.middleware
async def origin_only_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    host, origin = request.headers.get("Host"), request.headers.get("Origin")
    if host is not None and origin is not None and origin_mismatch(host, origin):
        log.warning("origin_rejected", host=host, origin=origin)
        return web.Response(status=403)
    if request.method == "OPTIONS":
        return web.Response()
    return await handler(request)


@web.middleware
async def body_limit_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app[SIMULATOR].config.max_upload_size
        return web.Response(status=413, text=f"Maximum request body size {limit} exceeded.")


def _registry(new: bool) -> dict[str, NodeDef]:
    # The media nodes' specs (and some outputs) differ between the release lines.
    media = (*animation_nodes(new), *video_nodes(new), *audio_nodes(new))
    return {node.name: node for node in (*CORE_NODES, *IMAGE_NODES, *CONTROL_NODES, *media)}


def _build(config: SimulatorConfig) -> Simulator:
    owns = config.data_dir is None
    root = Path(tempfile.mkdtemp(prefix="formy-sim-")) if owns else Path(str(config.data_dir))
    dirs = Dirs(root.resolve())
    dirs.create()
    env = Env(config, dirs)
    registry = _registry(config.is_new_profile)
    queue_ref: list[PromptQueue] = []
    hub = Hub(server_features(config), lambda: queue_ref[0].remaining())
    queue = PromptQueue(hub.send_status, config.history_size)
    queue_ref.append(queue)
    engine = Engine(env, registry, hub, queue)
    return Simulator(config, env, registry, hub, queue, engine, owns)


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    sim = app[SIMULATOR]
    sim.hub.start()
    sim.engine.start()
    log.info("simulator_started", data_dir=str(sim.dirs.root), comfyui=sim.config.comfyui_version)
    yield
    await sim.engine.aclose()
    await sim.hub.aclose()
    if sim.owns_data_dir:
        await asyncio.to_thread(shutil.rmtree, sim.dirs.root, True)
    log.info("simulator_stopped")


async def _close_sockets(app: web.Application) -> None:
    # Open WebSocket handlers would otherwise hold up the server's shutdown.
    await app[SIMULATOR].hub.aclose()


def create_app(config: SimulatorConfig | None = None) -> web.Application:
    """Build a fake ComfyUI server application (0.3.64 unless `config.comfyui_version` says)."""
    config = config or SimulatorConfig()
    app = web.Application(
        client_max_size=config.max_upload_size,
        middlewares=[origin_only_middleware, body_limit_middleware],
    )
    app[SIMULATOR] = _build(config)
    add_routes(app)
    app.cleanup_ctx.append(_lifecycle)
    app.on_shutdown.append(_close_sockets)
    return app


@contextlib.asynccontextmanager
async def run_simulator(
    config: SimulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[str]:
    """Start on a free port (port 0 = pick one), yield the base URL, stop cleanly after."""
    async with serve_app(create_app(config), host, port) as url:
        yield url


@contextlib.asynccontextmanager
async def serve_app(
    app: web.Application, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[str]:
    """Serve an app made by `create_app` as `run_simulator` does: a test that holds the app can
    look at its state (`app[SIMULATOR]`) while it runs."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_port = runner.addresses[0][1]
        url_host = f"[{host}]" if ":" in host else host
        yield f"http://{url_host}:{bound_port}"
    finally:
        await runner.cleanup()


async def serve(config: SimulatorConfig, host: str, port: int) -> None:
    """Run until cancelled (used by the `formy-async simulator --port 8188` command)."""
    async with run_simulator(config, host, port) as url:
        log.info("simulator_listening", url=url)
        await asyncio.Event().wait()
