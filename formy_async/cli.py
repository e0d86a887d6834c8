"""The `formy-async` command: use a server's API, run the whole stack, or run the simulator.

The client commands need only the client's dependencies; the others (the service's) import
what they run when they run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .client.cli import (
    EXIT_DONE,
    EXIT_USAGE,
    add_client_commands,
    parse_params,
    run_client_command,
)
from .start_problems import LISTEN_ERRNOS, listen_problem, startup_problem

if TYPE_CHECKING:
    from .settings import Settings

EPILOG = """\
exit status: 0 when the command (or the job it waited for) succeeded, 1 when the job failed or
was cancelled, 2 on a usage error, a refused request or a server that cannot be reached.
The server is --url, else FORMY_URL, else http://127.0.0.1:8080; the token --token or FORMY_TOKEN.
run, worker, token, simulator, doctor and workflow are the service's: they need
formy-async[server]. workflow check exits 1 when a workflow does not fit a backend.
"""
#: what the service's commands import that a client-only install does not have
SERVER_MODULES = frozenset(
    {
        "aiobotocore",
        "aiofiles",
        "arq",
        "av",
        "fakeredis",
        "jwt",
        "PIL",
        "prometheus_client",
        "dotenv",
        "redis",
        "structlog",
    }
)
SERVICE_COMMANDS = ("run", "worker", "token", "simulator", "doctor", "workflow")


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
    token.add_argument("--admin", action="store_true", help="admin scope: graphs, stats")
    token.add_argument(
        "--graphs", action="store_true", help="graphs scope: may submit API-format graphs"
    )
    token.add_argument("--ttl", default="1h", help="how long it works: 90s, 15m, 1h, 7d")
    commands.add_parser(
        "worker",
        help="an arq worker (REDIS_URL, COMFYUI_URL) that rides out Redis restarts",
    )
    doctor = commands.add_parser(
        "doctor", help="check a ComfyUI backend step by step with the upscale workflow"
    )
    doctor.add_argument("--comfyui", help="the ComfyUI URL (default: COMFYUI_URL)")
    _add_workflow_commands(commands)
    sim = commands.add_parser("simulator", help="a fake ComfyUI server (no GPU)")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=8188)
    sim.add_argument(
        "--step-delay", type=float, default=0.15, help="seconds per sampler step (default 0.15)"
    )
    sim.add_argument(
        "--comfyui-version",
        default="0.38.1",
        help="the ComfyUI release to imitate: 0.3.64, or 0.25 and later (default 0.38.1)",
    )
    return parser


def _add_workflow_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    workflow = commands.add_parser(
        "workflow", help="import a ComfyUI export into the catalogue, check it against ComfyUI"
    )
    actions = workflow.add_subparsers(dest="action", required=True)
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--comfyui", help="the ComfyUI URL (default: COMFYUI_URL)")
    where.add_argument("--workflows-dir", type=Path, help="default: FORMY_WORKFLOWS_DIR")
    imports = actions.add_parser(
        "import",
        parents=[where],
        help="a ComfyUI export (API or editor format) → workflows/NAME.json + a drafted NAME.toml",
    )
    imports.add_argument("file", type=Path, help="the exported JSON file")
    imports.add_argument("--name", help="the workflow's name (default: from the file's name)")
    imports.add_argument("--force", action="store_true", help="replace a workflow of that name")
    check = actions.add_parser(
        "check",
        parents=[where],
        help="hold workflows against ComfyUI (--comfyui, else every backend of COMFYUI_URL)",
    )
    check.add_argument("names", nargs="*", metavar="NAME", help="default: every workflow")


def main(argv: Sequence[str] | None = None) -> None:
    """The console entry point; exits with the status `run_command` returns."""
    code = run_command(argv)
    if code:
        raise SystemExit(code)


def run_command(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command in SERVICE_COMMANDS:
        return _run_service_command(args)
    if args.command == "submit":
        try:
            args.params = parse_params(args.param)
        except ValueError as exc:
            parser.error(str(exc))
    return run_client_command(args)


def _run_service_command(args: argparse.Namespace) -> int:
    """Run one of SERVICE_COMMANDS; a client-only install is told what to install instead."""
    commands: dict[str, Callable[[argparse.Namespace], int]] = {
        "run": _run_stack,
        "worker": _run_worker,
        "doctor": _run_doctor,
        "token": _mint,
        "simulator": _run_simulator,
        "workflow": _run_workflow,
    }
    try:
        return commands[args.command](args)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in SERVER_MODULES:
            raise
        raise SystemExit(
            f"formy-async {args.command}: this is the service's command, and this install has "
            f"the client only (no {exc.name}): install formy-async[server] "
            "(in a checkout: .venv/bin/pip install -e '.[server]')"
        ) from None


def _settings(command: str, *, secret: bool | None, **overrides: object) -> Settings:
    """The settings, checked as the command needs them; a problem exits with one line.

    `secret`: a real SECRET_KEY is required (True), or checked only when one is set (None).
    """
    from .settings import Settings
    from .workflows import Catalogue

    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
        if secret or (secret is None and settings.secret_key):
            settings.check_secret()
        Catalogue.load(settings.workflows_dir)  # a broken workflow file is named here
    except ValueError as exc:
        raise SystemExit(f"formy-async {command}: {startup_problem(exc)}") from None
    return settings


# --- the service's commands ----------------------------------------------------------------


def _run_stack(args: argparse.Namespace) -> int:
    overrides: dict[str, object] = {}
    if args.port is not None:
        overrides["port"] = args.port
    if args.host is not None:
        overrides["host"] = args.host
    elif not any(os.environ.get(k) for k in ("HOST", "FORMY_HOST")):
        overrides["host"] = "127.0.0.1"  # a development stack is not for the network
    settings = _settings("run", secret=None, **overrides)  # none: the run makes one
    from .logs import setup_logging

    setup_logging(
        "console" if settings.log_format == "auto" else settings.log_format, settings.log_level
    )
    from .embedded import serve

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(settings))
    return EXIT_DONE


def _run_worker(args: argparse.Namespace) -> int:
    settings = _settings("worker", secret=True)
    from .worker.process import run_worker_process

    run_worker_process(settings)
    return EXIT_DONE


def _run_simulator(args: argparse.Namespace) -> int:
    from .logs import setup_logging

    setup_logging("console")
    from .simulator import SimulatorConfig
    from .simulator import serve as serve_simulator

    try:
        config = SimulatorConfig(step_delay=args.step_delay, comfyui_version=args.comfyui_version)
    except ValueError as exc:
        raise SystemExit(f"formy-async simulator: {exc}") from None
    print(
        f"ComfyUI simulator, as ComfyUI {config.comfyui_version}: http://{args.host}:{args.port}",
        flush=True,
    )
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve_simulator(config, args.host, args.port))
    except OSError as exc:
        if exc.errno not in LISTEN_ERRNOS:
            raise
        problem = listen_problem(exc, args.host, args.port)
        raise SystemExit(f"formy-async simulator: {problem}") from None
    return EXIT_DONE


def _run_doctor(args: argparse.Namespace) -> int:
    from .doctor import Step, run_doctor
    from .models import without_credentials
    from .workflows import Catalogue

    settings = _settings("doctor", secret=False)
    url = (args.comfyui or settings.comfyui_base).rstrip("/")
    print(f"Checking the ComfyUI backend at {without_credentials(url)}")

    def report(step: Step) -> None:
        mark = "ok " if step.ok else "FAIL"
        print(f"  [{mark}] {step.name} ({step.seconds * 1000:.0f} ms): {step.detail}", flush=True)

    ok = asyncio.run(run_doctor(url, Catalogue.load(settings.workflows_dir), report))
    print("All checks passed." if ok else "A check failed: see above.")
    return EXIT_DONE if ok else 1


def _run_workflow(args: argparse.Namespace) -> int:
    from .authoring.commands import run_workflow_command
    from .settings import Settings

    # the catalogue is what these commands add to and report on: it need not load yet
    try:
        settings = Settings()
    except ValueError as exc:
        raise SystemExit(f"formy-async workflow {args.action}: {startup_problem(exc)}") from None
    return run_workflow_command(args, settings)


def _mint(args: argparse.Namespace) -> int:
    from .auth import mint_token, parse_ttl

    settings = _settings("token", secret=True)
    try:
        token = mint_token(
            settings.secret_key,
            args.user,
            admin=args.admin,
            graphs=args.graphs,
            ttl=parse_ttl(args.ttl),
        )
    except ValueError as exc:
        print(f"formy-async token: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(token)
    return EXIT_DONE
