"""The client commands of `formy-async`: submit, wait, status, cancel, jobs, workflows, upload."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from ..errors import FormyAPIError, FormyConnectionError, JobFinished
from ..models import JobView, Upload

if TYPE_CHECKING:
    from .api import FormyClient
    from .printer import Printer

DEFAULT_URL = "http://127.0.0.1:8080"
JOB_STATUSES = ("pending", "processing", "done", "failed", "cancelled")
EXIT_DONE, EXIT_JOB_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
CLIENT_COMMANDS = ("submit", "wait", "status", "cancel", "jobs", "workflows", "upload")


@dataclass(frozen=True)
class FileParam:
    """A param given as `KEY=@path`: the file is uploaded first and the param gets its id."""

    path: Path


def add_client_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
        help="a param; VALUE is read as JSON when it parses (7, true, [1]), else as a string; "
        "@FILE uploads an image and passes its id (image=@photo.jpg)",
    )
    submit.add_argument("--wait", action="store_true", help="follow the job until it ends")
    out_help = "save the outputs into FOLDER/<job id>/ (never replacing a file)"
    submit.add_argument("--out", type=Path, metavar="FOLDER", help=out_help + "; waits")
    wait = commands.add_parser("wait", parents=[common], help="follow a job until it ends")
    wait.add_argument("job_id")
    wait.add_argument("--out", type=Path, metavar="FOLDER", help=out_help)
    upload = commands.add_parser(
        "upload", parents=[common], help="upload an input image; prints its id for image params"
    )
    upload.add_argument("file", type=Path, help="a PNG, JPEG or WEBP image")
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
    """`KEY=VALUE` pairs as params: `@path` a file to upload (FileParam), VALUE as JSON when it
    parses, else the string itself. A string that starts with @ is given as JSON: '"@me"'."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--param takes KEY=VALUE, not {pair!r}")
        if raw.startswith("@"):
            if raw == "@":
                raise ValueError(f"--param {key}=@ names no file: {key}=@photo.jpg")
            params[key] = FileParam(Path(raw[1:]).expanduser())
            continue
        try:
            params[key] = json.loads(raw)
        except ValueError:
            params[key] = raw
    return params


@dataclass
class _Call:
    """One client command's arguments and printer, and the job it is following if any."""

    args: argparse.Namespace
    printer: Printer
    following: str | None = None  # what Ctrl+C offers to cancel


Command: TypeAlias = "Callable[[FormyClient, _Call], Awaitable[int]]"


def run_client_command(args: argparse.Namespace) -> int:
    """Run one of CLIENT_COMMANDS; its exit status."""
    # the printer only when a command prints: the service's processes (`formy-async worker`,
    # `formy-async run`) share this parser but never print through it
    from .printer import Printer

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
    from .api import FormyClient  # a client command's: the service's processes never load it

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
    params = dict(args.params)
    for key, value in params.items():
        if isinstance(value, FileParam):
            uploaded = await _upload_file(client, call, value.path)
            if uploaded is None:
                return EXIT_USAGE
            params[key] = uploaded.id
    job = await client.submit(args.workflow, **params)
    if not (args.wait or args.out):
        call.printer.job(job)
        return EXIT_DONE
    if not args.json:
        call.printer.note(f"job {job.id} submitted")
    return await _follow(client, call, job.id)


async def _upload(client: FormyClient, call: _Call) -> int:
    uploaded = await _upload_file(client, call, call.args.file)
    if uploaded is None:
        return EXIT_USAGE
    if call.args.json:
        call.printer.model(uploaded)
    else:
        call.printer.line(uploaded.id)  # alone on stdout: -p image=$(formy-async upload …)
    return EXIT_DONE


async def _upload_file(client: FormyClient, call: _Call, path: Path) -> Upload | None:
    """Upload one image, saying so on stderr; None (said why) when the file cannot be read."""
    try:
        uploaded = await client.upload(path)
    except OSError as exc:
        call.printer.error(f"cannot read {path}: {exc.strerror or exc}")
        return None
    if not call.args.json:
        size = f"{uploaded.width}×{uploaded.height} {uploaded.format}"
        call.printer.note(f"uploaded {path.name}: {uploaded.id} ({size})")
    return uploaded


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
    with contextlib.suppress(JobFinished):  # it ended while we asked: say how below
        await client.cancel(call.args.job_id)
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
    "upload": _upload,
}
