"""A formy-async process with timing probes: `python -m bench.traced worker|web`.

`$FORMY_BENCH_TRACE` turns on the step probes below; `$FORMY_BENCH_STALLS` the garbage
collection and event-loop stall monitor of `bench.stalls`. Either, both, or neither (then it is
the plain process).

The probes wrap named functions of the product (and arq) at start-up, before the process runs
as it always does (`formy_async.cli` for the worker, `server.py` for the web); nothing in
`formy_async` is changed. Each probe appends JSON lines `{"k": job id, "s": step, "p": "b"|"e",
"t": time.time()}` to the file named by `$FORMY_BENCH_TRACE` ("b" when the call began, "e"
when it returned; a mark has neither). The job id is the one the worker binds to structlog's
context for the whole job, else the call's `Job` or job id argument. A probe whose target is
gone (the code moved on) is skipped and named in the file as `{"missing": target}`, so the
trace keeps working while the code changes; `bench.rows_trace` reads the file.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import json
import os
import re
import runpy
import sys
import time
from collections.abc import Callable
from typing import IO, Any

import structlog

from . import stalls

TRACE_ENV = "FORMY_BENCH_TRACE"
STALLS_ENV = "FORMY_BENCH_STALLS"  # see bench.stalls
_JOB_ID = re.compile(r"^[0-9a-f]{32}$")
_TYPE = re.compile(r'"type":\s*"(\w+)"')

#: (target "module:Qualified.name", step) of every span: the call's begin and end
WORKER_SPANS = (
    ("formy_async.worker.run:_claimed_job", "job_read"),
    ("formy_async.worker.run:_models", "models_found"),
    ("formy_async.store.leases:Leases.hold", "lease_held"),
    ("formy_async.worker.pool:BackendPool.try_acquire", "slot_try"),
    ("formy_async.comfy.client:ComfyClient.open_socket", "socket_open"),
    ("formy_async.worker.run:upload_inputs", "inputs_sent"),
    ("formy_async.store.lifecycle:Lifecycle.start", "started_appended"),
    ("formy_async.comfy.client:ComfyClient.queue_prompt", "prompt_queued"),
    ("formy_async.comfy.client:ComfyClient.result", "history_read"),
    ("formy_async.comfy.client:ComfyClient.view", "output_fetched"),
    ("formy_async.storage:LocalStorage.put", "output_stored"),
    ("formy_async.media:probe", "output_probed"),
    ("formy_async.store.lifecycle:Lifecycle.output", "output_appended"),
    ("formy_async.store.lifecycle:Lifecycle.done", "done_appended"),
    ("formy_async.store.slots:Slots.release", "slot_released"),
    ("formy_async.store.jobs:JobStore.append_soon", "append"),
    ("arq.worker:Worker.run_job", "arq_run_job"),
    ("arq.worker:Worker.finish_job", "arq_finish_job"),
)
WEB_SPANS = (("formy_async.store.jobs:JobStore.create", "created"),)
#: ComfyUI messages the worker parses: the ones worth a mark
_MESSAGE_MARKS = {
    "ExecutionStart": "comfy_start_seen",
    "ExecutionSuccess": "comfy_success_seen",
}


class Recorder:
    """Appends stamps to the trace file, one line each (line-buffered: a kill loses nothing)."""

    def __init__(self, path: str) -> None:
        self.out: IO[str] = open(path, "a", buffering=1)  # noqa: SIM115 (open for the process)

    def stamp(self, key: str, step: str, phase: str = "", at: float | None = None) -> None:
        line = {"k": key, "s": step, "p": phase, "t": time.time() if at is None else at}
        self.out.write(json.dumps(line) + "\n")

    def note(self, **fields: Any) -> None:
        self.out.write(json.dumps(fields) + "\n")


def job_key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    bound = structlog.contextvars.get_contextvars().get("job_id")
    if isinstance(bound, str):
        return bound
    for value in (*args, *kwargs.values()):
        if isinstance(value, str) and _JOB_ID.match(value):
            return value
        job_id = getattr(value, "id", None)
        if isinstance(job_id, str) and hasattr(value, "workflow"):
            return job_id
    return ""


def _step_of(step: str, args: tuple[Any, ...]) -> str:
    """`append` is split by the event it appends (`append:progress`, `append:done`, …)."""
    if step == "append" and len(args) > 2:
        return f"append:{getattr(args[2], 'type', '?')}"
    return step


def _span(recorder: Recorder, step: str, original: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(original):

        @functools.wraps(original)
        async def async_probe(*args: Any, **kwargs: Any) -> Any:
            key, name = job_key(args, kwargs), _step_of(step, args)
            recorder.stamp(key, name, "b")
            try:
                return await original(*args, **kwargs)
            finally:
                recorder.stamp(key, name, "e")

        return async_probe

    @functools.wraps(original)
    def probe(*args: Any, **kwargs: Any) -> Any:
        key, name = job_key(args, kwargs), _step_of(step, args)
        recorder.stamp(key, name, "b")
        result: Any = None
        try:
            result = original(*args, **kwargs)
            return result
        finally:
            if isinstance(result, asyncio.Future):  # a write made now, done later: ends then
                result.add_done_callback(lambda _: recorder.stamp(key, name, "e"))
            else:
                recorder.stamp(key, name, "e")

    return probe


def _resolve(target: str) -> tuple[Any, str, Any] | None:
    """(owner, attribute, current value) of "module:Class.attr", or None if it is gone."""
    module_name, _, qualname = target.partition(":")
    try:
        owner: Any = importlib.import_module(module_name)
        *path, attr = qualname.split(".")
        for part in path:
            owner = getattr(owner, part)
        return owner, attr, getattr(owner, attr)
    except (ImportError, AttributeError):
        return None


def install_spans(recorder: Recorder, spans: tuple[tuple[str, str], ...]) -> None:
    for target, step in spans:
        found = _resolve(target)
        if found is None:
            recorder.note(missing=target)
            continue
        owner, attr, original = found
        setattr(owner, attr, _span(recorder, step, original))


def install_message_marks(recorder: Recorder) -> None:
    """Marks when the worker parses ComfyUI's start, success and `executing: null` messages."""
    found = _resolve("formy_async.comfy.client:parse_text")
    if found is None:
        recorder.note(missing="formy_async.comfy.client:parse_text")
        return
    owner, attr, original = found

    @functools.wraps(original)
    def parse_text(raw: str) -> Any:
        moment = time.time()
        message = original(raw)
        kind = type(message).__name__
        step = _MESSAGE_MARKS.get(kind)
        if kind == "Executing" and getattr(message, "node", "") is None:
            step = "comfy_done_seen"
        if step is not None:
            recorder.stamp(job_key((), {}), step, at=moment)
        return message

    setattr(owner, attr, parse_text)


def install_web_marks(recorder: Recorder) -> None:
    """The web side: `POST /api/jobs` as handled (a middleware added to the app it builds),
    and each event the hub delivers and each socket send, by event type."""
    found = _resolve("formy_async.web.app:create_app")
    if found is not None:
        owner, attr, create_app = found

        @functools.wraps(create_app)
        def traced_app(*args: Any, **kwargs: Any) -> Any:
            from aiohttp import web

            app = create_app(*args, **kwargs)

            @web.middleware
            async def timing(request: web.Request, handler: Any) -> web.StreamResponse:
                begin = time.time()
                response: web.StreamResponse = await handler(request)
                if request.method == "POST" and request.path == "/api/jobs":
                    body = getattr(response, "body", None)
                    job_id = json.loads(body).get("id") if isinstance(body, bytes) else None
                    if isinstance(job_id, str):
                        recorder.stamp(job_id, "submit_handled", "b", at=begin)
                        recorder.stamp(job_id, "submit_handled", "e")
                return response

            app.middlewares.insert(0, timing)
            return app

        setattr(owner, attr, traced_app)
    _wrap_delivery(recorder, "formy_async.store.hub:EventHub.deliver", "hub_delivered")
    _wrap_delivery(recorder, "formy_async.web.ws:Connection._send", "ws_sent")


def _wrap_delivery(recorder: Recorder, target: str, step: str) -> None:
    """A mark per event (by its type) at the call's begin: `deliver(channel, raw)` or
    `_send(job_id, seq, raw)`; the job id is the channel's tail or the first argument."""
    found = _resolve(target)
    if found is None:
        recorder.note(missing=target)
        return
    owner, attr, original = found

    def mark(args: tuple[Any, ...]) -> None:
        raw = args[-1] if args and isinstance(args[-1], str) else ""
        kind = _TYPE.search(raw)
        key = str(args[1]).rsplit(":", 1)[-1] if len(args) > 1 else ""
        recorder.stamp(key, f"{step}:{kind.group(1) if kind else '?'}")

    if inspect.iscoroutinefunction(original):

        @functools.wraps(original)
        async def async_delivery(*args: Any, **kwargs: Any) -> Any:
            mark(args)
            return await original(*args, **kwargs)

        setattr(owner, attr, async_delivery)
    else:

        @functools.wraps(original)
        def delivery(*args: Any, **kwargs: Any) -> Any:
            mark(args)
            return original(*args, **kwargs)

        setattr(owner, attr, delivery)


def main() -> None:
    role = sys.argv[1] if len(sys.argv) > 1 else ""
    if role not in ("worker", "web"):
        sys.exit("usage: python -m bench.traced worker|web")
    if os.environ.get(STALLS_ENV):
        stalls.install(os.environ[STALLS_ENV])
    if os.environ.get(TRACE_ENV):
        recorder = Recorder(os.environ[TRACE_ENV])
        recorder.note(role=role, pid=os.getpid())
        if role == "worker":
            install_spans(recorder, WORKER_SPANS)
            install_message_marks(recorder)
        else:
            install_spans(recorder, WEB_SPANS)
            install_web_marks(recorder)
    if role == "worker":
        from formy_async.cli import main as cli

        sys.argv = ["formy-async", "worker"]
        cli()
    else:
        sys.argv = ["server.py"]
        runpy.run_path("server.py", run_name="__main__")


if __name__ == "__main__":
    main()
