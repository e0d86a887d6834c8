"""The `formy-async` command: use a server's API, run the whole stack, or run the simulator.

The client commands need only the client's dependencies; the others (the service's) import
what they run when they run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
from collections.abc import Sequence

from .client.cli import (
    CLIENT_COMMANDS,
    EXIT_DONE,
    add_client_commands,
    parse_params,
    run_client_command,
)

EPILOG = """\
exit status: 0 when the command (or the job it waited for) succeeded, 1 when the job failed or
was cancelled, 2 on a usage error, a refused request or a server that cannot be reached.
The server is --url, else FORMY_URL, else http://127.0.0.1:8080; the token --token or FORMY_TOKEN.
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="formy-async",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    add_client_commands(commands)
    run = commands.add_parser(
        "run",
        help="web + worker (+ fake Redis and simulator unless "
        "REDIS_URL / COMFYUI_URL are set) in one process",
    )
    run.add_argument("--host", help="default: 127.0.0.1 (HOST)")
    run.add_argument("--port", type=int, help="default: 8080 (PORT)")
    token = commands.add_parser(
        "token", help="mint an API token signed with SECRET_KEY (as a web app's login would)"
    )
    token.add_argument("--user", required=True, help="the user id (the token's subject)")
    token.add_argument("--admin", action="store_true", help="admin scope: raw graphs, stats")
    token.add_argument("--ttl", default="1h", help="how long it works: 90s, 15m, 1h, 7d")
    commands.add_parser(
        "worker",
        help="an arq worker (REDIS_URL, COMFYUI_URL) that rides out Redis restarts",
    )
    doctor = commands.add_parser(
        "doctor", help="check a ComfyUI backend step by step with the upscale workflow"
    )
    doctor.add_argument("--comfyui", help="the ComfyUI URL (default: COMFYUI_URL)")
    sim = commands.add_parser("simulator", help="a fake ComfyUI server (no GPU)")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8188)
    sim.add_argument(
        "--step-delay", type=float, default=0.15, help="seconds per sampler step (default 0.15)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """The console entry point; exits with the status `run_command` returns."""
    code = run_command(argv)
    if code:
        raise SystemExit(code)


def run_command(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "run":
        _run_stack(args)
    elif args.command == "worker":
        from .settings import Settings
        from .worker.process import run_worker_process

        run_worker_process(Settings())
    elif args.command == "doctor":
        return _run_doctor(args)
    elif args.command == "token":
        return _mint(parser, args)
    elif args.command == "simulator":
        _run_simulator(args)
    elif args.command in CLIENT_COMMANDS:
        if args.command == "submit":
            try:
                args.params = parse_params(args.param)
            except ValueError as exc:
                parser.error(str(exc))
        return run_client_command(args)
    return EXIT_DONE


# --- the service's commands ----------------------------------------------------------------


def _run_stack(args: argparse.Namespace) -> None:
    from .settings import Settings

    overrides: dict[str, object] = {}
    if args.port is not None:
        overrides["port"] = args.port
    if args.host is not None:
        overrides["host"] = args.host
    elif not any(os.environ.get(k) for k in ("HOST", "FORMY_HOST")):
        overrides["host"] = "127.0.0.1"  # a development stack is not for the network
    settings = Settings(**overrides)  # type: ignore[arg-type]
    from .logs import setup_logging  # the service's commands need the [server] extra

    setup_logging(
        "console" if settings.log_format == "auto" else settings.log_format, settings.log_level
    )
    from .embedded import serve

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(settings))


def _run_simulator(args: argparse.Namespace) -> None:
    from .logs import setup_logging

    setup_logging("console")
    from .simulator import SimulatorConfig
    from .simulator import serve as serve_simulator

    config = SimulatorConfig(step_delay=args.step_delay)
    print(f"ComfyUI simulator on http://{args.host}:{args.port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_simulator(config, args.host, args.port))


def _run_doctor(args: argparse.Namespace) -> int:
    from .doctor import Step, run_doctor
    from .settings import Settings
    from .workflows import Catalogue

    settings = Settings()
    url = (args.comfyui or settings.comfyui_base).rstrip("/")
    print(f"Checking the ComfyUI backend at {url}")

    def report(step: Step) -> None:
        mark = "ok " if step.ok else "FAIL"
        print(f"  [{mark}] {step.name} ({step.seconds * 1000:.0f} ms): {step.detail}", flush=True)

    ok = asyncio.run(run_doctor(url, Catalogue.load(settings.workflows_dir), report))
    print("All checks passed." if ok else "A check failed: see above.")
    return EXIT_DONE if ok else 1


def _mint(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from .auth import mint_token, parse_ttl
    from .settings import Settings

    settings = Settings()
    try:
        settings.check_secret()
        token = mint_token(
            settings.secret_key, args.user, admin=args.admin, ttl=parse_ttl(args.ttl)
        )
    except ValueError as exc:
        parser.exit(2, f"formy-async token: {exc}\n")
    print(token)
    return EXIT_DONE
