"""The `formy-async` command: run the whole stack, or the ComfyUI simulator on its own."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
from collections.abc import Sequence

from .logs import setup_logging


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="formy-async", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run",
        help="web + worker (+ fake Redis and simulator unless "
        "REDIS_URL / COMFYUI_URL are set) in one process",
    )
    run.add_argument("--host", help="default: 127.0.0.1 (HOST)")
    run.add_argument("--port", type=int, help="default: 8080 (PORT)")
    sim = commands.add_parser("simulator", help="a fake ComfyUI server (no GPU)")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8188)
    sim.add_argument(
        "--step-delay", type=float, default=0.15, help="seconds per sampler step (default 0.15)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    from .settings import Settings

    if args.command == "run":
        overrides: dict[str, object] = {}
        if args.port is not None:
            overrides["port"] = args.port
        if args.host is not None:
            overrides["host"] = args.host
        elif not any(os.environ.get(k) for k in ("HOST", "FORMY_HOST")):
            overrides["host"] = "127.0.0.1"  # a development stack is not for the network
        settings = Settings(**overrides)  # type: ignore[arg-type]
        setup_logging(
            "console" if settings.log_format == "auto" else settings.log_format, settings.log_level
        )
        from .embedded import serve

        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(settings))
    elif args.command == "simulator":
        setup_logging("console")
        from .simulator import SimulatorConfig
        from .simulator import serve as serve_simulator

        config = SimulatorConfig(step_delay=args.step_delay)
        print(f"ComfyUI simulator on http://{args.host}:{args.port}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve_simulator(config, args.host, args.port))
