"""The async client of the formy-async API: jobs, their live events, uploads and outputs."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import itertools
import json
import mimetypes
import os
import random
import urllib.parse
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp
from pydantic import BaseModel, ValidationError

from ..errors import FormyAPIError, FormyConnectionError, RedisUnavailable, api_error
from ..models import (
    EVENT_ADAPTER,
    FINAL_EVENT_TYPES,
    Event,
    JobStatus,
    JobView,
    OutputFile,
    Upload,
)

# aiohttp's transport failures: ClientError covers refused, reset and server timeouts
_TRANSPORT_ERRORS = (aiohttp.ClientError, OSError, TimeoutError)
_CHUNK = 64 * 1024
_BACKOFF_FIRST = 0.1
_BACKOFF_MAX = 5.0
_HEARTBEAT = 15.0
#: tries of one submission whose answer is lost (its Idempotency-Key makes them one job)
SUBMIT_TRIES = 4


class WorkflowInfo(BaseModel):
    """A workflow of the catalogue; `params` is the JSON Schema of its params."""

    name: str
    title: str
    description: str = ""
    time_limit: float | None = None
    params: dict[str, Any]


class _JobPage(BaseModel):
    jobs: list[JobView]
    next_cursor: str | None = None


class _Workflows(BaseModel):
    workflows: list[WorkflowInfo]


class FormyClient:
    """A client of one formy-async server, over one aiohttp session.

    Use it as `async with FormyClient(url) as client:` (or call `aclose()`); a closed client
    cannot be reused. A `session` passed in is used as it is and left open. Every method raises
    `FormyAPIError` when the server answers with an error and `FormyConnectionError` when it
    cannot be reached; aiohttp's own exceptions never escape.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        timeout: float = 30,
        session: aiohttp.ClientSession | None = None,
        *,
        max_reconnects: int = 8,
        poll_interval: float = 1.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.max_reconnects = max_reconnects
        self.poll_interval = poll_interval
        self._token = token
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._session = session
        self._owns_session = session is None
        self._closed = False

    async def __aenter__(self) -> FormyClient:
        self._http()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the session this client opened (not one it was given)."""
        self._closed = True
        if self._owns_session and self._session is not None:
            await self._session.close()

    # --- jobs ---------------------------------------------------------------------------------

    async def submit(self, workflow: str, /, **params: Any) -> JobView:
        """Queue a job of `workflow` with `params`; the server fills in defaults and the seed.

        It goes with an Idempotency-Key, so a submission whose answer was lost (the connection
        broke, Redis did not answer) is sent again, up to SUBMIT_TRIES times, and makes one job.
        """
        body = {"workflow": workflow, "params": params}
        once = {"Idempotency-Key": uuid.uuid4().hex}
        for attempt in itertools.count(1):
            try:
                answer = await self._request("POST", "/api/jobs", json_body=body, headers=once)
                return JobView.model_validate(answer)
            except (FormyConnectionError, RedisUnavailable) as exc:
                if attempt >= SUBMIT_TRIES:
                    raise
                wait = getattr(exc, "retry_after", None) or _backoff(attempt + 1)
                await asyncio.sleep(min(wait, _BACKOFF_MAX))
        raise AssertionError("unreachable")

    async def get(self, job_id: str) -> JobView:
        return JobView.model_validate(await self._request("GET", _job_path(job_id)))

    async def cancel(self, job_id: str) -> JobView:
        """Cancel a job. A running job may report `cancelled` shortly after this returns."""
        data = await self._request("POST", _job_path(job_id, "cancel"))
        return JobView.model_validate(data)

    async def list(
        self, status: JobStatus | None = None, limit: int = 20
    ) -> AsyncGenerator[builtins.list[JobView], None]:
        """Pages of jobs, newest first, following the server's cursor to the last page."""
        query: dict[str, str] = {"limit": str(limit)}
        if status is not None:
            query["status"] = status
        while True:
            page = _JobPage.model_validate(await self._request("GET", "/api/jobs", query=query))
            if page.jobs:
                yield page.jobs
            if page.next_cursor is None:
                return
            query["cursor"] = page.next_cursor

    async def wait(self, job_id: str) -> JobView:
        """Follow the job's events until its final one and return the job.

        A failed or cancelled job is returned, not raised: look at `status` and `error`.
        """
        async with contextlib.aclosing(self.events(job_id)) as events:
            async for _ in events:
                pass
        return await self.get(job_id)

    # --- files --------------------------------------------------------------------------------

    async def upload(self, path: str | os.PathLike[str]) -> Upload:
        """Upload an image file (multipart field `file`) for a workflow that takes one."""
        source = Path(path)
        content = await asyncio.to_thread(source.read_bytes)
        form = aiohttp.FormData()
        content_type = mimetypes.guess_type(source.name)[0] or "application/octet-stream"
        form.add_field("file", content, filename=source.name, content_type=content_type)
        return Upload.model_validate(await self._request("POST", "/api/uploads", data=form))

    async def download(self, job_id: str, folder: str | os.PathLike[str]) -> builtins.list[Path]:
        """Stream every output of the job into `folder/<job id>/` (created if needed); their paths.

        Jobs of one workflow name their outputs alike (`9_1.png`), hence a folder per job; and
        an existing file is never replaced: a second copy is saved as `9_1-2.png`.
        """
        job = await self.get(job_id)
        target = Path(folder) / Path(job.id).name  # the server's id: never outside the folder
        await asyncio.to_thread(target.mkdir, parents=True, exist_ok=True)
        return [await self._download(output, target) for output in job.outputs]

    async def workflows(self) -> builtins.list[WorkflowInfo]:
        return _Workflows.model_validate(await self._request("GET", "/api/workflows")).workflows

    # --- events -------------------------------------------------------------------------------

    async def events(self, job_id: str, after: int = 0) -> AsyncGenerator[Event, None]:
        """The job's events after seq `after`, then live ones, ending with its final event.

        Each event comes once and in order: a dropped socket is reopened with backoff and the
        subscription resumed after the last seq seen. Where WebSockets are refused (a proxy),
        the job's event log is polled instead. Event types this client does not know are
        skipped. Gives up with `FormyConnectionError` after `max_reconnects` failures in a row.
        """
        stream = _EventStream(job_id, after)
        if (await self.get(job_id)).is_final:  # its whole log is written: no socket needed
            source = self._polled_events(stream, poll=False)
        else:
            source = self._socket_events(stream)
        async with contextlib.aclosing(source) as events:
            async for event in events:
                yield event

    async def _socket_events(self, stream: _EventStream) -> AsyncGenerator[Event, None]:
        failures = 0
        while True:
            try:
                async with self._connect_socket() as ws:
                    await self._subscribe(ws, stream.job_id, stream.last)
                    async for message in ws:
                        if message.type is aiohttp.WSMsgType.ERROR:
                            break
                        data = _message(message)
                        if data.get("type") == "subscribed":
                            failures = 0
                        elif (resume := stream.control(data)) is not None:
                            await self._subscribe(ws, stream.job_id, resume)
                        elif (event := stream.accept(data)) is not None:
                            yield event
                            if event.type in FINAL_EVENT_TYPES:
                                return
                reason = "the server closed the WebSocket"
            except _WebSocketRefused:
                break
            except _TRANSPORT_ERRORS as exc:
                reason = _describe(exc)
            failures += 1
            if failures > self.max_reconnects:
                raise FormyConnectionError(f"lost the events of job {stream.job_id}: {reason}")
            await asyncio.sleep(_backoff(failures))
        async with contextlib.aclosing(self._polled_events(stream, poll=True)) as events:
            async for polled in events:
                yield polled

    async def _polled_events(
        self, stream: _EventStream, *, poll: bool
    ) -> AsyncGenerator[Event, None]:
        """The job's event log after the last seq seen; with `poll`, again until it ends."""
        failures = 0
        while True:
            try:
                path = _job_path(stream.job_id, "events")
                raw = await self._request("GET", path, query={"after": str(stream.last)})
                failures = 0
            except FormyConnectionError:
                failures += 1
                if failures > self.max_reconnects:
                    raise
                await asyncio.sleep(_backoff(failures))
                continue
            for item in raw if isinstance(raw, builtins.list) else []:
                event = stream.accept(item) if isinstance(item, dict) else None
                if event is not None:
                    yield event
                    if event.type in FINAL_EVENT_TYPES:
                        return
            if not poll:
                return
            await asyncio.sleep(self.poll_interval)

    @contextlib.asynccontextmanager
    async def _connect_socket(self) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
        query = {"token": self._token} if self._token else None
        try:
            async with asyncio.timeout(self.timeout):
                ws = await self._http().ws_connect(
                    self.url + "/ws", params=query, headers=self._headers, heartbeat=_HEARTBEAT
                )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status in (401, 403):
                code = "unauthorized" if exc.status == 401 else "forbidden"
                raise FormyAPIError(exc.status, code, "the WebSocket was refused") from None
            if exc.status < 500:  # something in between does not pass WebSockets on
                raise _WebSocketRefused from exc
            raise
        try:
            yield ws
        finally:
            with contextlib.suppress(*_TRANSPORT_ERRORS):
                async with asyncio.timeout(self.timeout):
                    await ws.close()

    async def _subscribe(
        self, ws: aiohttp.ClientWebSocketResponse, job_id: str, after: int
    ) -> None:
        async with asyncio.timeout(self.timeout):
            await ws.send_json({"type": "subscribe", "job_id": job_id, "after": after})

    # --- HTTP ---------------------------------------------------------------------------------

    def _http(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("this FormyClient is closed; make a new one")
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=self.timeout, sock_read=self.timeout
                )
            )
        return self._session

    async def _request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        json_body: Any = None,
        data: aiohttp.FormData | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        session = self._http()
        try:
            async with session.request(
                method,
                self.url + path,
                params=query,
                json=json_body,
                data=data,
                headers={**self._headers, **(headers or {})},
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as resp:
                status, body = resp.status, await resp.read()
                reason = resp.reason or ""
        except _TRANSPORT_ERRORS as exc:
            raise FormyConnectionError(f"{method} {self.url}{path}: {_describe(exc)}") from exc
        if status >= 400:
            raise _api_error(status, reason, body)
        try:
            return json.loads(body)
        except ValueError:
            raise FormyAPIError(status, "invalid_response", "the answer is not JSON") from None

    async def _download(self, output: OutputFile, folder: Path) -> Path:
        target = await asyncio.to_thread(_claim, folder / Path(output.filename).name)
        partial = target.with_name(target.name + ".part")
        url = output.url if "://" in output.url else self.url + output.url
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=self.timeout, sock_read=self.timeout
        )
        try:
            async with self._http().get(url, headers=self._headers, timeout=timeout) as resp:
                if resp.status >= 400:
                    raise _api_error(resp.status, resp.reason or "", await resp.read())
                with await asyncio.to_thread(partial.open, "wb") as file:
                    async for chunk in resp.content.iter_chunked(_CHUNK):
                        await asyncio.to_thread(file.write, chunk)
        except BaseException as exc:
            await asyncio.to_thread(partial.unlink, missing_ok=True)
            await asyncio.to_thread(target.unlink, missing_ok=True)  # the empty claim
            if isinstance(exc, aiohttp.ClientError | TimeoutError):
                raise FormyConnectionError(f"GET {url}: {_describe(exc)}") from exc
            raise
        await asyncio.to_thread(partial.replace, target)
        return target


def _claim(wanted: Path) -> Path:
    """An empty file at `wanted`, or at `<stem>-2<suffix>`, -3 … when taken: never another's."""
    for n in itertools.count(1):
        path = wanted if n == 1 else wanted.with_name(f"{wanted.stem}-{n}{wanted.suffix}")
        try:
            path.open("xb").close()  # exclusive: two downloads at once cannot pick one name
        except FileExistsError:
            continue
        return path
    raise AssertionError("unreachable")


class _WebSocketRefused(Exception):
    """The server (or a proxy) answered the WebSocket handshake with an HTTP error."""


class _EventStream:
    """Where one job's event stream is: the last seq seen, and how to read each message."""

    def __init__(self, job_id: str, after: int) -> None:
        self.job_id = job_id
        self.last = after

    def accept(self, data: Mapping[str, Any]) -> Event | None:
        """The event in `data`, or None for another job's, a repeated or an unknown one."""
        seq = data.get("seq")
        if data.get("job_id") != self.job_id or not isinstance(seq, int) or seq <= self.last:
            return None
        self.last = seq  # also past unknown types, so that a resubscription skips them
        try:
            return EVENT_ADAPTER.validate_python(data)
        except ValidationError as exc:
            if any(e["type"] == "union_tag_invalid" for e in exc.errors()):
                return None  # a newer server's event type
            raise FormyAPIError(None, "invalid_event", f"bad {data.get('type')} event") from None

    def control(self, data: Mapping[str, Any]) -> int | None:
        """For a control message: raise on `error`, the seq to resume after on `overflow`."""
        kind = data.get("type")
        if kind == "error":
            error = data.get("error") or {}
            raise api_error(
                None,
                str(error.get("code", "websocket_error")),
                str(error.get("message", "the server reported an error")),
            )
        if kind == "overflow":
            told = data.get("last_seq", {}).get(self.job_id, self.last)
            # never resume past what actually arrived
            return min(told, self.last) if isinstance(told, int) else self.last
        return None


def _job_path(job_id: str, *rest: str) -> str:
    return "/".join(("/api/jobs", urllib.parse.quote(job_id, safe=""), *rest))


def _message(message: aiohttp.WSMessage) -> dict[str, Any]:
    if message.type is not aiohttp.WSMsgType.TEXT:
        return {}
    try:
        data = json.loads(message.data)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _api_error(status: int, reason: str, body: bytes) -> FormyAPIError:
    """The server's `{"error": {"code", "message"}}`, or what a proxy in between said."""
    try:
        error = json.loads(body)["error"]
        return api_error(status, str(error["code"]), str(error["message"]), error.get("details"))
    except (ValueError, KeyError, TypeError):
        text = body.decode("utf-8", "replace").strip()[:200]
        return FormyAPIError(status, "http_error", text or reason or f"HTTP {status}")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


def _backoff(failures: int) -> float:
    """Seconds before reconnecting: doubling from 0.1 s to 5 s, with jitter against herds."""
    ceiling = min(_BACKOFF_MAX, _BACKOFF_FIRST * 2 ** (failures - 1))
    return random.uniform(ceiling / 2, ceiling)
