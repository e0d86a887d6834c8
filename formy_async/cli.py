"""The `formy-async` command: use a server's API, run the whole stack, or run the simulator."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cli_output import Printer
from .client import FormyClient
from .errors import FormyAPIError, FormyConnectionError
from .models import JobView

DEFAULT_URL = "http://127.0.0.1:8080"
JOB_STATUSES = ("pending", "processing", "done", "failed", "cancelled")
EXIT_DONE, EXIT_JOB_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130

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
    _client_commands(commands)
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


def _client_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help=f"the server (FORMY_URL; default {DEFAULT_URL})")
    common.add_argument("--token", help="API token (FORMY_TOKEN)")
    common.add_argument("--timeout", type=float, default=30, help="seconds per request")
    common.add_argument("--json", action="store_true", help="print JSON lines")
    submit = commands.add_parser("submit", parents=[common], help="submit a job")
    submit.add_argument("workflow", help="a workflow name (see `formy-async workflows`)")
    submit.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a param; VALUE is read as JSON when it parses (7, true, [1]), else as a string",
    )
    submit.add_argument("--wait", action="store_true", help="follow the job until it ends")
    submit.add_argument("--out", type=Path, help="save the outputs into this folder (waits)")
    wait = commands.add_parser("wait", parents=[common], help="follow a job until it ends")
    wait.add_argument("job_id")
    wait.add_argument("--out", type=Path, help="save the outputs into this folder")
    status = commands.add_parser("status", parents=[common], help="show a job")
    status.add_argument("job_id")
    cancel = commands.add_parser("cancel", parents=[common], help="cancel a job")
    cancel.add_argument("job_id")
    jobs = commands.add_parser("jobs", parents=[common], help="list jobs, newest first")
    jobs.add_argument("--status", choices=JOB_STATUSES)
    jobs.add_argument("--limit", type=_positive, default=20, help="how many (default 20)")
    commands.add_parser("workflows", parents=[common], help="list the workflows and params")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def parse_params(pairs: Sequence[str]) -> dict[str, Any]:
    """`KEY=VALUE` pairs as params: VALUE as JSON when it parses, else the string itself."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--param takes KEY=VALUE, not {pair!r}")
        try:
            params[key] = json.loads(raw)
        except ValueError:
            params[key] = raw
    return params


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
        from .worker import run_worker_process

        run_worker_process(Settings())
    elif args.command == "doctor":
        return _run_doctor(args)
    elif args.command == "token":
        return _mint(parser, args)
    elif args.command == "simulator":
        _run_simulator(args)
    else:
        if args.command == "submit":
            try:
                args.params = parse_params(args.param)
            except ValueError as exc:
                parser.error(str(exc))
        return _run_client_command(args)
    return EXIT_DONE


# --- client commands --------------------------------------------------------------------------


@dataclass
class _Call:
    """One client command's arguments and printer, and the job it is following if any."""

    args: argparse.Namespace
    printer: Printer
    following: str | None = None  # what Ctrl+C offers to cancel


Command = Callable[[FormyClient, _Call], Awaitable[int]]


def _run_client_command(args: argparse.Namespace) -> int:
    call = _Call(args, Printer(json_lines=args.json))
    try:
        return asyncio.run(_with_client(call, _COMMANDS[args.command]))
    except KeyboardInterrupt:
        if call.following is None:
            return EXIT_INTERRUPTED
        return _offer_to_cancel(call, call.following)


def _offer_to_cancel(call: _Call, job_id: str) -> int:
    try:
        answer = input(f"\ncancel job {job_id}? [y/N] ")
    except (EOFError, KeyboardInterrupt):
        answer = ""
    if answer.strip().lower() not in ("y", "yes"):
        call.printer.note(f"job {job_id} goes on; follow it with: formy-async wait {job_id}")
        return EXIT_INTERRUPTED
    call.args.job_id = job_id
    try:
        return asyncio.run(_with_client(call, _cancel_and_wait))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


async def _with_client(call: _Call, command: Command) -> int:
    args = call.args
    url = args.url or os.environ.get("FORMY_URL") or DEFAULT_URL
    token = args.token or os.environ.get("FORMY_TOKEN") or None
    try:
        async with FormyClient(url, token=token, timeout=args.timeout) as client:
            return await command(client, call)
    except FormyConnectionError as exc:
        call.printer.error(f"cannot reach the server at {url}: {exc.message}")
    except FormyAPIError as exc:
        call.printer.api_error(exc)
    return EXIT_USAGE


async def _submit(client: FormyClient, call: _Call) -> int:
    args = call.args
    job = await client.submit(args.workflow, **args.params)
    if not (args.wait or args.out):
        call.printer.job(job)
        return EXIT_DONE
    if not args.json:
        call.printer.note(f"job {job.id} submitted")
    return await _follow(client, call, job.id)


async def _wait(client: FormyClient, call: _Call) -> int:
    return await _follow(client, call, call.args.job_id)


async def _follow(client: FormyClient, call: _Call, job_id: str) -> int:
    """Show the job's events until its end, save its outputs if asked; 0 if it is done."""
    call.following = job_id
    with call.printer.watch(job_id) as show:
        async with contextlib.aclosing(client.events(job_id)) as events:
            async for event in events:
                show(event)
    call.following = None
    job = await client.get(job_id)
    call.printer.finished(job)
    if call.args.out is not None and job.outputs:
        call.printer.saved(await client.download(job_id, call.args.out))
    return EXIT_DONE if job.status == "done" else EXIT_JOB_FAILED


async def _status(client: FormyClient, call: _Call) -> int:
    call.printer.job(await client.get(call.args.job_id))
    return EXIT_DONE


async def _cancel(client: FormyClient, call: _Call) -> int:
    call.printer.job(await client.cancel(call.args.job_id))
    return EXIT_DONE


async def _cancel_and_wait(client: FormyClient, call: _Call) -> int:
    """After Ctrl+C and a yes: cancel the job, then report how it ended."""
    try:
        await client.cancel(call.args.job_id)
    except FormyAPIError as exc:
        if exc.code != "job_finished":  # it ended while we asked: say how
            raise
    job = await client.wait(call.args.job_id)
    call.printer.finished(job)
    return EXIT_DONE if job.status == "done" else EXIT_JOB_FAILED


async def _jobs(client: FormyClient, call: _Call) -> int:
    limit: int = call.args.limit
    shown: list[JobView] = []
    async with contextlib.aclosing(
        client.list(status=call.args.status, limit=min(limit, 100))
    ) as pages:
        async for page in pages:
            shown += page[: limit - len(shown)]
            if len(shown) >= limit:
                break
    call.printer.jobs(shown)
    return EXIT_DONE


async def _workflows(client: FormyClient, call: _Call) -> int:
    call.printer.workflows(await client.workflows())
    return EXIT_DONE


_COMMANDS: dict[str, Command] = {
    "submit": _submit,
    "wait": _wait,
    "status": _status,
    "cancel": _cancel,
    "jobs": _jobs,
    "workflows": _workflows,
}


# --- the stack and the simulator --------------------------------------------------------------


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
