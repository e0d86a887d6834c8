"""The async client against a running stack, a proxy that drops sockets, and a scripted server."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from PIL import Image

from formy_async.client.api import FormyClient
from formy_async.embedded import Stack
from formy_async.errors import FormyAPIError, FormyConnectionError
from formy_async.models import Done, Job, JobView, Progress, Started

from ..conftest import TOKEN, free_port
from ..helpers import api_session

SMALL: dict[str, Any] = {"prompt": "a red fox", "steps": 2, "width": 64, "height": 64}


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[FormyClient]:
    async with FormyClient(stack.url, token=TOKEN, timeout=10) as c:
        yield c


# --- a TCP proxy whose WebSocket connections a test can cut -----------------------------------


class CuttingProxy:
    """Forwards TCP to `port`, counting WebSocket upgrades; `cut()` aborts every connection."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = ""
        self.websockets_opened = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    def cut(self) -> None:
        for writer in self._writers:
            writer.transport.abort()

    async def aclose(self) -> None:
        assert self._server is not None
        self._server.close()
        self.cut()
        await self._server.wait_closed()
        await asyncio.sleep(0)  # let the aborted transports finish closing

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        self._writers += [writer, up_writer]
        await asyncio.gather(
            self._pipe(reader, up_writer, upstream=True),
            self._pipe(up_reader, writer, upstream=False),
            return_exceptions=True,
        )

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, upstream: bool
    ) -> None:
        while data := await reader.read(65536):
            if upstream and data.startswith(b"GET /ws"):
                self.websockets_opened += 1
            writer.write(data)
            await writer.drain()
        writer.transport.abort()


@pytest.fixture
async def proxy(slow_stack: Stack) -> AsyncIterator[CuttingProxy]:
    port = int(slow_stack.url.rsplit(":", 1)[1])
    proxy = CuttingProxy(port)
    await proxy.start()
    yield proxy
    await proxy.aclose()


# --- a scripted server: one job, and a list of messages to play on each WebSocket ------------

JOB_ID = "j1"
RECV = "recv"  # script step: wait for the client's next message


def _event(seq: int, type_: str, **fields: Any) -> dict[str, Any]:
    base = {"job_id": JOB_ID, "seq": seq, "ts": 1.0, "status": "processing", "progress": 0}
    return {**base, "type": type_, **fields}


PROGRESS = {"node": "3", "node_type": "KSampler", "value": 1, "max": 2}
DONE = {"status": "done", "progress": 100, "outputs": []}


class ScriptedServer:
    """Answers `GET /api/jobs/j1` (processing) and plays `scripts[i]` on the i-th socket.

    With `refuse`, the WebSocket handshake gets that HTTP status instead; the job's event log
    (`log`) then shows one more event at each request, as a running job's would.
    """

    def __init__(
        self, *scripts: list[Any], refuse: int | None = None, log: Sequence[Any] = ()
    ) -> None:
        self.scripts = list(scripts)
        self.refuse = refuse
        self.log = list(log)
        self.received: list[dict[str, Any]] = []
        self.requests: list[web.Request] = []
        self.app = web.Application()
        self.app.router.add_get("/api/jobs/{job_id}", self._job)
        self.app.router.add_get("/api/jobs/{job_id}/events", self._events)
        self.app.router.add_get("/ws", self._ws)

    async def _events(self, request: web.Request) -> web.Response:
        self.requests.append(request)
        shown = sum(r.path.endswith("/events") for r in self.requests)
        after = int(request.query["after"])
        return web.json_response([e for e in self.log[:shown] if e["seq"] > after])

    async def _job(self, request: web.Request) -> web.Response:
        self.requests.append(request)
        job = JobView.of(Job(id=JOB_ID, workflow="text_to_image", params={}, status="processing"))
        return web.Response(text=job.model_dump_json(), content_type="application/json")

    async def _ws(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request)
        if self.refuse is not None:
            return web.Response(status=self.refuse)
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        script = self.scripts.pop(0) if self.scripts else []
        for step in script:
            if step == RECV:
                message = await ws.receive()
                if message.type is not WSMsgType.TEXT:
                    break
                self.received.append(json.loads(message.data))
            else:
                await ws.send_str(json.dumps(step))
        await ws.close()
        return ws


@contextlib.asynccontextmanager
async def serving(server: ScriptedServer) -> AsyncIterator[str]:
    runner = web.AppRunner(server.app, shutdown_timeout=1)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def _scripted_events(server: ScriptedServer, after: int = 0, **options: Any) -> list[Any]:
    async with serving(server) as url, FormyClient(url, **options) as client:
        return [event async for event in client.events(JOB_ID, after=after)]


# --- jobs -------------------------------------------------------------------------------------


async def test_submit_returns_the_pending_job_with_its_resolved_params(
    client: FormyClient,
) -> None:
    job = await client.submit("text_to_image", **SMALL, seed=7)
    assert (job.workflow, job.params["seed"], job.params["steps"]) == ("text_to_image", 7, 2)
    assert job.links["self"] == f"/api/jobs/{job.id}"


async def test_get_returns_the_job_by_id(client: FormyClient) -> None:
    job = await client.submit("text_to_image", **SMALL)
    assert (await client.get(job.id)).id == job.id


async def test_unknown_job_raises_api_error_job_not_found_404(client: FormyClient) -> None:
    with pytest.raises(FormyAPIError) as caught:
        await client.get("nope")
    assert (caught.value.status, caught.value.code) == (404, "job_not_found")


async def test_invalid_params_raise_api_error_422_with_details(client: FormyClient) -> None:
    with pytest.raises(FormyAPIError) as caught:
        await client.submit("text_to_image", prompt="a fox", steps=0)
    assert (caught.value.status, caught.value.code) == (422, "invalid_params")
    assert caught.value.details[0]["param"] == "steps"


async def test_unreachable_server_raises_connection_error() -> None:
    async with FormyClient(f"http://127.0.0.1:{free_port()}", timeout=5) as client:
        with pytest.raises(FormyConnectionError):
            await client.get("any")


async def test_wait_returns_the_done_job_with_its_outputs(client: FormyClient) -> None:
    job = await client.wait((await client.submit("text_to_image", **SMALL)).id)
    assert (job.status, job.progress, len(job.outputs)) == ("done", 100, 1)


async def test_wait_returns_a_failed_job_instead_of_raising(slow_stack: Stack) -> None:
    body = {"workflow": "text_to_image", "params": {**SMALL, "steps": 150}, "time_limit": 0.3}
    async with (
        api_session() as session,
        session.post(slow_stack.url + "/api/jobs", json=body) as resp,
    ):
        job_id = (await resp.json())["id"]
    async with FormyClient(slow_stack.url, token=TOKEN) as client:
        job = await client.wait(job_id)
    assert job.status == "failed"
    assert job.error is not None


async def test_list_pages_follow_the_cursor_newest_first(client: FormyClient) -> None:
    ids = [(await client.submit("text_to_image", **SMALL)).id for _ in range(3)]
    pages = [[job.id for job in page] async for page in client.list(limit=2)]
    assert pages == [ids[:0:-1], ids[:1]]


async def test_list_filters_by_status(client: FormyClient) -> None:
    done = await client.wait((await client.submit("text_to_image", **SMALL)).id)
    await client.cancel((await client.submit("text_to_image", **SMALL | {"steps": 150})).id)
    pages = [page async for page in client.list(status="done")]
    assert [[job.id for job in page] for page in pages] == [[done.id]]


async def test_cancel_stops_a_running_job(slow_stack: Stack) -> None:
    async with FormyClient(slow_stack.url, token=TOKEN) as client:
        job = await client.submit("text_to_image", **SMALL | {"steps": 150})
        async with contextlib.aclosing(client.events(job.id)) as events:
            async for event in events:
                if isinstance(event, Started):
                    break
        await client.cancel(job.id)
        job = await client.wait(job.id)
    assert job.status == "cancelled"


async def test_cancelling_a_finished_job_raises_409_job_finished(client: FormyClient) -> None:
    job = await client.wait((await client.submit("text_to_image", **SMALL)).id)
    with pytest.raises(FormyAPIError) as caught:
        await client.cancel(job.id)
    assert (caught.value.status, caught.value.code) == (409, "job_finished")


async def test_workflows_lists_the_catalogue_with_param_schemas(client: FormyClient) -> None:
    workflows = {w.name: w for w in await client.workflows()}
    assert "prompt" in workflows["text_to_image"].params["properties"]


# --- files ------------------------------------------------------------------------------------


async def test_upload_returns_the_stored_image(client: FormyClient, tmp_path: Path) -> None:
    path = tmp_path / "in.png"
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), "red").save(buffer, "PNG")
    path.write_bytes(buffer.getvalue())
    upload = await client.upload(path)
    assert (upload.format, upload.width, upload.height) == ("png", 64, 48)
    assert upload.url == f"/api/uploads/{upload.id}"


async def test_download_saves_every_output_into_a_folder_of_the_job(
    client: FormyClient, tmp_path: Path
) -> None:
    job = await client.wait((await client.submit("text_to_image", **SMALL, batch_size=2)).id)
    paths = await client.download(job.id, tmp_path / "saved")
    assert {p.parent for p in paths} == {tmp_path / "saved" / job.id}
    assert sorted(p.name for p in paths) == sorted(o.filename for o in job.outputs)
    for path, output in zip(paths, job.outputs, strict=True):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size == output.size


async def test_downloads_of_two_jobs_with_like_named_outputs_keep_both(
    client: FormyClient, tmp_path: Path
) -> None:
    first, second = [
        await client.wait((await client.submit("text_to_image", **SMALL)).id) for _ in range(2)
    ]
    assert first.outputs[0].filename == second.outputs[0].filename  # why a folder per job
    (one,) = await client.download(first.id, tmp_path)
    (other,) = await client.download(second.id, tmp_path)
    assert one != other
    assert one.exists() and other.exists()


async def test_downloading_a_job_again_never_replaces_a_file(
    client: FormyClient, tmp_path: Path
) -> None:
    job = await client.wait((await client.submit("text_to_image", **SMALL)).id)
    (saved,) = await client.download(job.id, tmp_path)
    saved.write_bytes(b"edited by hand")
    (again,) = await client.download(job.id, tmp_path)
    assert again == saved.with_name(f"{saved.stem}-2{saved.suffix}")
    assert saved.read_bytes() == b"edited by hand"
    assert again.read_bytes()[:4] == b"\x89PNG"


# --- events -----------------------------------------------------------------------------------


async def test_events_are_typed_in_order_and_end_with_done(client: FormyClient) -> None:
    job = await client.submit("text_to_image", **SMALL)
    events = [event async for event in client.events(job.id)]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert any(isinstance(e, Progress) for e in events)
    assert isinstance(events[-1], Done)


async def test_events_after_a_seq_start_after_it(client: FormyClient) -> None:
    job = await client.submit("text_to_image", **SMALL)
    events = [event async for event in client.events(job.id, after=2)]
    assert events[0].seq == 3


async def test_events_of_a_finished_job_replay_its_log_after_the_seq(client: FormyClient) -> None:
    job = await client.wait((await client.submit("text_to_image", **SMALL)).id)
    events = [event async for event in client.events(job.id, after=1)]
    assert events[0].seq == 2
    assert isinstance(events[-1], Done)


async def test_events_resume_without_loss_or_repeat_after_the_socket_drops(
    slow_stack: Stack, proxy: CuttingProxy
) -> None:
    async with FormyClient(proxy.url, token=TOKEN) as client:
        job = await client.submit("text_to_image", **SMALL | {"steps": 30})
        events = []
        async for event in client.events(job.id):
            events.append(event)
            if isinstance(event, Progress) and event.node_type == "KSampler" and event.value == 5:
                proxy.cut()
    async with (
        api_session() as session,
        session.get(f"{slow_stack.url}/api/jobs/{job.id}/events") as resp,
    ):
        logged = await resp.json()
    assert proxy.websockets_opened == 2
    assert [(e.seq, e.type) for e in events] == [(e["seq"], e["type"]) for e in logged]
    assert logged[-1]["type"] == "done"


async def test_events_skip_unknown_types_and_repeated_seqs() -> None:
    server = ScriptedServer(
        [
            RECV,
            {"type": "subscribed", "job_id": JOB_ID, "after": 0},
            _event(1, "sparkle", glitter=True),
            _event(2, "progress", **PROGRESS),
            _event(2, "progress", **PROGRESS),
            _event(3, "done", **DONE),
        ]
    )
    events = await _scripted_events(server)
    assert [(e.seq, e.type) for e in events] == [(2, "progress"), (3, "done")]


async def test_overflow_resubscribes_after_the_last_seq_received() -> None:
    server = ScriptedServer(
        [
            RECV,
            {"type": "subscribed", "job_id": JOB_ID, "after": 0},
            _event(1, "progress", **PROGRESS),
            {"type": "overflow", "last_seq": {JOB_ID: 1}},
            RECV,
            _event(2, "done", **DONE),
        ]
    )
    events = await _scripted_events(server)
    assert server.received[1] == {"type": "subscribe", "job_id": JOB_ID, "after": 1}
    assert [e.seq for e in events] == [1, 2]


async def test_reconnection_resubscribes_after_the_last_seq_seen() -> None:
    server = ScriptedServer(
        [RECV, {"type": "subscribed"}, _event(4, "progress", **PROGRESS)],
        [RECV, {"type": "subscribed"}, _event(5, "done", **DONE)],
    )
    events = await _scripted_events(server, after=3)
    assert [m["after"] for m in server.received] == [3, 4]
    assert [e.seq for e in events] == [4, 5]


async def test_websocket_error_message_raises_api_error() -> None:
    error = {"code": "job_not_found", "message": "no job with id 'j1'"}
    server = ScriptedServer([RECV, {"type": "error", "job_id": JOB_ID, "error": error}])
    with pytest.raises(FormyAPIError) as caught:
        await _scripted_events(server)
    assert (caught.value.status, caught.value.code) == (None, "job_not_found")


async def test_refused_websocket_falls_back_to_polling_the_event_log() -> None:
    log = [_event(2, "progress", **PROGRESS), _event(3, "done", **DONE)]
    server = ScriptedServer(refuse=404, log=log)
    events = await _scripted_events(server, after=1, poll_interval=0.01)
    assert [e.seq for e in events] == [2, 3]
    assert [r.query["after"] for r in server.requests if r.path.endswith("/events")] == [
        "1",
        "2",
    ]


async def test_unauthorized_websocket_raises_api_error_401() -> None:
    server = ScriptedServer(refuse=401)
    with pytest.raises(FormyAPIError) as caught:
        await _scripted_events(server)
    assert (caught.value.status, caught.value.code) == (401, "unauthorized")


async def test_events_give_up_after_max_reconnects_with_connection_error() -> None:
    server = ScriptedServer()  # every socket closes at once
    with pytest.raises(FormyConnectionError):
        await _scripted_events(server, max_reconnects=2)
    assert sum(r.path == "/ws" for r in server.requests) == 3


# --- the client itself ------------------------------------------------------------------------


async def test_token_goes_in_the_bearer_header_and_the_websocket_query() -> None:
    server = ScriptedServer([RECV, _event(1, "done", **DONE)])
    await _scripted_events(server, token="s3cret")
    http, ws = server.requests
    assert http.headers["Authorization"] == "Bearer s3cret"
    assert ws.query["token"] == "s3cret"


async def test_closed_client_refuses_to_be_reused(stack: Stack) -> None:
    client = FormyClient(stack.url, token=TOKEN)
    await client.workflows()
    await client.aclose()
    with pytest.raises(RuntimeError):
        await client.workflows()


async def test_a_given_session_is_used_and_left_open(stack: Stack) -> None:
    async with aiohttp.ClientSession() as session:
        async with FormyClient(stack.url, token=TOKEN, session=session) as client:
            await client.workflows()
        assert not session.closed
