"""The ComfyUI client: queue a prompt, follow it on the WebSocket, read its history and files."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncGenerator
from typing import Any, Literal

import aiohttp
import structlog

from ..errors import ComfyExecutionFailed, ComfyInterrupted, ComfyRejected, ComfyUnavailable
from ..models import without_credentials
from .backend import BackendInfo
from .messages import (
    ComfyMessage,
    Executing,
    FileRef,
    HistoryEntry,
    PreviewImage,
    parse_binary,
    parse_text,
)
from .sockets import SPARES, PromptSocket, SpareSocket, new_client_id

log = structlog.get_logger()

_FEATURE_FLAGS = json.dumps({"type": "feature_flags", "data": {"supports_preview_metadata": True}})


def new_prompt_id() -> str:
    """A prompt id every ComfyUI takes: since 0.25 a client's id must be a UUID in canonical
    lowercase hyphenated form (what `str(uuid4())` prints); older servers take any string."""
    return str(uuid.uuid4())


class ComfyClient:
    """One ComfyUI server, reached over a shared aiohttp session (no thread per job)."""

    def __init__(
        self,
        base_url: str,
        session: aiohttp.ClientSession,
        *,
        request_timeout: float = 30,
        idle_check: float = 10,
        reconnect_tries: int = 6,
        spare_socket: bool = False,
        sockets: aiohttp.ClientSession | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        #: the URL without credentials: the only form errors and logs show
        self.label = without_credentials(self.base_url)
        self.session = session
        #: where its WebSockets open (default `session`). aiohttp opens a socket on an idle
        #: kept-alive connection and never gives it back, so a socket opened ahead on the HTTP
        #: session leaves the next `/view` or `POST /prompt` a new TCP connection to make.
        self.sockets = session if sockets is None else sockets
        self.timeout = aiohttp.ClientTimeout(total=request_timeout)
        self.idle_check = idle_check
        self.reconnect_tries = reconnect_tries
        self._info: BackendInfo | None = None
        #: sockets kept for the next prompts, the freshest last (see `socket_ahead`)
        self._keeps_spare = spare_socket
        self._spares: list[SpareSocket] = []
        self._closing: set[asyncio.Future[None]] = set()  # stale spares, being closed

    # --- HTTP ---------------------------------------------------------------------------------

    async def _call(
        self, method: str, path: str, *, within: float | None = None, **kwargs: Any
    ) -> tuple[int, bytes]:
        """Status and body of one request; transport faults and 5xx become ComfyUnavailable."""
        limit = self.timeout if within is None else aiohttp.ClientTimeout(total=within)
        try:
            async with self.session.request(
                method, self.base_url + path, timeout=limit, **kwargs
            ) as resp:
                body = await resp.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            reason = _reason(exc)
            raise ComfyUnavailable(f"ComfyUI at {self.label} is unreachable: {reason}") from exc
        if resp.status >= 500:
            raise ComfyUnavailable(
                f"ComfyUI answered {method} {path} with {resp.status}: {body[:200]!r}"
            )
        return resp.status, body

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        status, body = await self._call(method, path, **kwargs)
        if status != 200:
            raise ComfyUnavailable(f"ComfyUI answered {method} {path} with {status}")
        try:
            return json.loads(body) if body else None
        except ValueError as exc:
            raise ComfyUnavailable(f"ComfyUI answered {method} {path} with no JSON") from exc

    async def system_stats(self, *, within: float | None = None) -> dict[str, Any]:
        stats = await self._json("GET", "/system_stats", within=within)
        if not isinstance(stats, dict):
            raise ComfyUnavailable("ComfyUI's /system_stats is not an object")
        return stats

    async def answers(self, *, within: float) -> bool:
        """Whether ComfyUI answers `/system_stats` within `within` seconds."""
        try:
            await self.system_stats(within=within)
        except ComfyUnavailable:
            return False
        return True

    async def queue_remaining(self, *, within: float | None = None) -> int:
        """Prompts ComfyUI holds, running and pending."""
        data = await self._json("GET", "/prompt", within=within)
        try:
            return int(data["exec_info"]["queue_remaining"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ComfyUnavailable("ComfyUI's /prompt has no queue_remaining") from exc

    async def info(self, stats: dict[str, Any] | None = None) -> BackendInfo:
        """The server's version and capabilities: asked once, then kept (see `forget_info`);
        `stats` is a `/system_stats` answer just read, if there is one."""
        if self._info is None:
            stats = stats if stats is not None else await self.system_stats()
            status, body = await self._call("GET", "/features")
            features = _json_object(body) if status == 200 else {}
            status, body = await self._call("GET", "/api/jobs?limit=1")
            jobs_api = status == 200 and "jobs" in _json_object(body)
            version = str((stats.get("system") or {}).get("comfyui_version") or "unknown")
            self._info = BackendInfo(version=version, features=features, jobs_api=jobs_api)
        return self._info

    def has_info(self) -> bool:
        return self._info is not None

    def forget_info(self) -> None:
        """Ask again next time: the server came back, and may be another version now."""
        self._info = None

    async def job(self, prompt_id: str) -> dict[str, Any] | None:
        """`GET /api/jobs/{id}` (newer servers): the prompt pending, running or finished; None
        when the server does not know it."""
        status, body = await self._call("GET", f"/api/jobs/{prompt_id}")
        if status == 404:
            return None
        if status != 200:
            raise ComfyUnavailable(f"ComfyUI answered /api/jobs/{prompt_id} with {status}")
        return _json_object(body)

    async def node_info(self, class_type: str) -> dict[str, Any]:
        """`/object_info/{class}`: the node's inputs and outputs; {} when ComfyUI lacks it."""
        info = await self._json("GET", f"/object_info/{class_type}")
        return info.get(class_type, {}) if isinstance(info, dict) else {}

    async def queue_prompt(
        self,
        graph: dict[str, Any],
        *,
        client_id: str,
        prompt_id: str,
        extra_data: dict[str, Any] | None = None,
    ) -> None:
        """POST /prompt (with `extra_data`, such as a partner-node key, when given); a graph
        ComfyUI refuses raises ComfyRejected with its node errors."""
        payload: dict[str, Any] = {"prompt": graph, "client_id": client_id, "prompt_id": prompt_id}
        if extra_data:
            payload["extra_data"] = extra_data
        status, body = await self._call("POST", "/prompt", json=payload)
        answer = json.loads(body) if body else {}
        if status == 200 and not answer.get("node_errors"):
            return
        if status == 200:
            # queued with only its valid outputs: a job that misses outputs is not what was asked
            await self.cancel(prompt_id)
        raise ComfyRejected(_rejection_message(answer), details=answer)

    async def history(self, prompt_id: str) -> HistoryEntry | None:
        """The finished prompt's entry, or None while it is pending or running."""
        data = await self._json("GET", f"/history/{prompt_id}")
        if not data or prompt_id not in data:
            return None
        return HistoryEntry.model_validate(data[prompt_id])

    async def is_queued(self, prompt_id: str) -> bool:
        """Whether the prompt is running or pending in ComfyUI's queue."""
        data = await self._json("GET", "/queue")
        items = data.get("queue_running", []) + data.get("queue_pending", [])
        return any(len(item) > 1 and item[1] == prompt_id for item in items)

    async def cancel(self, prompt_id: str) -> None:
        """Drop the prompt from the pending queue, interrupt it if it runs; others untouched.

        Newer servers do both in one call that interrupts only if this prompt is still the one
        running at that instant; older ones get `/queue` delete and a targeted `/interrupt`,
        which in a narrow race could hit the prompt that started just after this one.
        """
        if (await self.info()).jobs_api:
            status, _ = await self._call("POST", f"/api/jobs/{prompt_id}/cancel")
            if status == 200:
                return
        await self._call("POST", "/queue", json={"delete": [prompt_id]})
        await self._call("POST", "/interrupt", json={"prompt_id": prompt_id})

    async def upload_image(self, data: bytes, name: str) -> str:
        """POST /upload/image (overwriting `name`); the name a LoadImage node takes."""
        form = aiohttp.FormData()
        form.add_field("image", data, filename=name, content_type="application/octet-stream")
        form.add_field("overwrite", "true")
        status, body = await self._call("POST", "/upload/image", data=form)
        if status != 200:
            raise ComfyUnavailable(f"ComfyUI refused the upload of {name!r}: {status}")
        answer = json.loads(body)
        folder = answer.get("subfolder") or ""
        return f"{folder}/{answer['name']}" if folder else str(answer["name"])

    async def has_input(self, name: str) -> bool:
        """Whether ComfyUI's input folder holds a file of this name (`HEAD /view`, no body)."""
        params = {"filename": name, "type": "input"}
        status, _ = await self._call("HEAD", "/view", params=params)
        return status == 200

    async def models(self, folder: str) -> list[str]:
        """File names ComfyUI lists in a model folder (`checkpoints`, `loras`, …)."""
        status, body = await self._call("GET", f"/models/{folder}")
        if status == 404:
            return []
        if status != 200:
            raise ComfyUnavailable(f"ComfyUI answered /models/{folder} with {status}")
        names = json.loads(body)
        return [str(n) for n in names] if isinstance(names, list) else []

    async def view(self, ref: FileRef) -> bytes:
        params = {"filename": ref.filename, "subfolder": ref.subfolder, "type": ref.type}
        status, body = await self._call("GET", "/view", params=params)
        if status != 200:
            raise ComfyUnavailable(f"ComfyUI could not serve {ref.filename!r}: {status}")
        return body

    # --- WebSocket ------------------------------------------------------------------------------

    async def _connect(self, client_id: str) -> aiohttp.ClientWebSocketResponse:
        url = self.base_url.replace("http", "ws", 1) + f"/ws?clientId={client_id}"
        try:
            ws = await self.sockets.ws_connect(
                url, timeout=aiohttp.ClientWSTimeout(ws_close=5), heartbeat=30, max_msg_size=0
            )
            await ws.send_str(_FEATURE_FLAGS)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ComfyUnavailable(
                f"ComfyUI's WebSocket at {self.label} is unreachable: {_reason(exc)}"
            ) from exc
        return ws

    async def _reconnect(
        self, client_id: str, old: aiohttp.ClientWebSocketResponse
    ) -> aiohttp.ClientWebSocketResponse:
        # ComfyUI keeps one socket per client id: the old one must be closed before the new one
        # opens, or the new one receives nothing once the old one's close is processed.
        await old.close()
        delay = 0.1
        for attempt in range(1, self.reconnect_tries + 1):
            try:
                return await self._connect(client_id)
            except ComfyUnavailable:
                log.warning("comfy_ws_reconnect_failed", attempt=attempt, retry_in=delay)
                if attempt == self.reconnect_tries:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5)
        raise AssertionError("unreachable")

    async def open_socket(self, client_id: str | None = None) -> PromptSocket:
        """A WebSocket of a client id of its own, for one prompt (see `run`); or of the
        `client_id` a prompt was queued with, to follow it again (see `follow`)."""
        client_id = client_id or new_client_id()
        return PromptSocket(client_id, await self._connect(client_id))

    def socket_ahead(self) -> tuple[str, asyncio.Future[PromptSocket]]:
        """A socket for a new prompt, of a client id no other prompt is using: its id at once,
        the socket once open. With `spare_socket`, it is a kept one with no handshake left to
        wait for: the socket of the last prompt that ended (handed on as it ended, see
        `follow`), else one opened ahead once a prompt ran with none kept (see `run`), so that
        a handshake holds up neither a prompt's queueing nor its start."""
        fresh: list[SpareSocket] = []
        for spare in self._spares:
            if spare.usable():
                fresh.append(spare)
            else:
                spare.discard(self._closing)
        spare = fresh.pop() if fresh else SpareSocket.opened(self.open_socket)
        self._spares = fresh
        return spare.client_id, spare.opening

    def _replenish(self) -> None:
        if self._keeps_spare and not self._spares:
            self._spares.append(SpareSocket.opened(self.open_socket))

    def _hand_on(self, socket: PromptSocket) -> bool:
        """Keep the socket of a prompt that ended for the next prompt, when it is whole (it
        never dropped) and fewer than SPARES are kept: True when it was kept, not closed.

        Each prompt's handshake, and its close, cost a worker about a tenth of its CPU per job;
        a handed-on socket costs neither, while the spare opened ahead stays for a prompt that
        comes while another runs."""
        if not self._keeps_spare or socket.gaps or socket.ws.closed:
            return False
        if len(self._spares) >= SPARES:
            return False
        self._spares.append(SpareSocket.handed_on(socket))
        return True

    async def aclose(self) -> None:
        """Close the sockets kept for the next prompts."""
        spares, self._spares = self._spares, []
        await asyncio.gather(*(spare.aclose() for spare in spares), return_exceptions=True)
        await asyncio.gather(*self._closing, return_exceptions=True)

    async def run(
        self,
        graph: dict[str, Any],
        prompt_id: str,
        socket: PromptSocket | None = None,
        extra_data: dict[str, Any] | None = None,
    ) -> AsyncGenerator[ComfyMessage, None]:
        """Queue the graph and yield this prompt's messages until ComfyUI is done with it.

        The socket opens before the prompt is queued so that nothing is missed (`socket`, when
        it was opened ahead, while the inputs were uploaded); see `follow`, which closes it or
        hands it on.
        Read the outcome with `result()` afterwards.
        """
        socket = socket if socket is not None else await self.open_socket()
        try:
            await self.queue_prompt(
                graph, client_id=socket.client_id, prompt_id=prompt_id, extra_data=extra_data
            )
        except BaseException:
            await socket.aclose()
            raise
        async with contextlib.aclosing(self.follow(prompt_id, socket)) as messages:
            async for message in messages:
                yield message
                # the next prompt's socket opens once this one runs, not while it is started
                self._replenish()

    async def follow(
        self, prompt_id: str, socket: PromptSocket
    ) -> AsyncGenerator[ComfyMessage, None]:
        """Yield the messages of a prompt already queued until ComfyUI is done with it.

        ComfyUI sends them to the socket of the client id the prompt was queued with, whichever
        socket that is now: a new one of that id gets the rest (none it missed). When it drops,
        it reconnects and asks ComfyUI whether the prompt finished meanwhile; once it has, a
        socket quiet for `idle_check` while the prompt runs is opened anew. At the end the
        socket is handed on to the next prompt (`_hand_on`) when the prompt's last message
        came on it, else closed.
        """
        client_id, ws = socket.client_id, socket.ws
        ended = False
        try:
            while True:
                try:
                    frame = await ws.receive(timeout=self.idle_check)
                except TimeoutError:
                    if await self._finished(prompt_id):
                        return
                    if socket.gaps:
                        # ComfyUI forgets a client id's socket when any socket of that id
                        # ends, and it may notice the cut one's end only now: open it anew
                        ws = await self._reconnect(client_id, ws)
                        socket.gaps += 1
                    continue
                if frame.type is aiohttp.WSMsgType.TEXT:
                    message = parse_text(frame.data)
                elif frame.type is aiohttp.WSMsgType.BINARY:
                    message = parse_binary(frame.data)
                else:  # closed, closing or errored: the server went away or dropped us
                    log.warning("comfy_ws_dropped", prompt_id=prompt_id, frame=frame.type.name)
                    ws = await self._reconnect(client_id, ws)
                    socket.gaps += 1
                    if await self._finished(prompt_id):
                        return
                    continue
                if message is None or message.prompt_id != prompt_id:
                    continue  # other prompts' broadcasts, legacy previews, status
                yield message
                if isinstance(message, Executing) and message.node is None:
                    ended = True
                    return
        finally:
            if not (ended and self._hand_on(socket)):
                await ws.close()

    async def _finished(self, prompt_id: str) -> bool:
        """True when history has the prompt; raises when ComfyUI no longer knows it at all."""
        state = await self.state(prompt_id)
        if state is None:
            raise ComfyUnavailable(
                f"prompt {prompt_id} vanished from ComfyUI (deleted or restarted)"
            )
        return state == "finished"

    async def knows(self, prompt_id: str) -> bool:
        """Whether the server has the prompt, pending, running or finished (a restarted one
        knows none of its earlier prompts)."""
        return await self.state(prompt_id) is not None

    async def state(self, prompt_id: str) -> Literal["queued", "finished"] | None:
        """Where the prompt is on the server: queued (pending or running), finished, or
        unknown to it (None)."""
        if (await self.info()).jobs_api:
            job = await self.job(prompt_id)  # one call, for pending and running prompts too
            if job is None:
                return None
            return "queued" if job.get("status") in ("pending", "in_progress") else "finished"
        if await self.history(prompt_id) is not None:
            return "finished"
        if await self.is_queued(prompt_id):
            return "queued"
        if await self.history(prompt_id) is not None:  # it finished between the two calls
            return "finished"
        return None

    async def result(self, prompt_id: str) -> HistoryEntry:
        """The finished prompt's history; raises when it failed or was interrupted."""
        entry = None
        for delay in (0, 0.05, 0.2, 0.5):
            await asyncio.sleep(delay)
            entry = await self.history(prompt_id)
            if entry is not None:
                break
        if entry is None:
            raise ComfyUnavailable(f"ComfyUI has no history for prompt {prompt_id}")
        last = entry.status.last("execution_success", "execution_error", "execution_interrupted")
        if last is None or last[0] == "execution_success":
            return entry
        name, data = last
        if name == "execution_interrupted":
            raise ComfyInterrupted(
                f"ComfyUI interrupted the prompt at node {data.get('node_id')}", details=data
            )
        message = str(data.get("exception_message", "")).strip()
        details = {
            k: data.get(k)
            for k in ("node_id", "node_type", "exception_type", "exception_message", "traceback")
        }
        raise ComfyExecutionFailed(
            f"node {data.get('node_id')} ({data.get('node_type')}) raised "
            f"{data.get('exception_type')}: {message}",
            details=details,
        )


def _reason(exc: BaseException) -> str:
    """What went wrong, without the request's URL (aiohttp puts it, credentials and all, into
    some of its errors)."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect ({exc.os_error.strerror or type(exc.os_error).__name__})"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"HTTP {exc.status} {exc.message}"
    return type(exc).__name__


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _rejection_message(answer: dict[str, Any]) -> str:
    """ComfyUI's reasons, one part per node error. A node may be one the graph never had (the
    server applies node replacements first), or of no known type (`class_type` null)."""
    error: dict[str, Any] = answer["error"] if isinstance(answer.get("error"), dict) else {}
    parts = [str(error.get("message") or "ComfyUI rejected the graph")]
    node_errors = answer.get("node_errors")
    if not node_errors and error.get("details"):
        parts[0] += f" ({error['details']})"
    for node_id, node in (node_errors if isinstance(node_errors, dict) else {}).items():
        class_type = node.get("class_type") or "unknown node type"
        for item in node.get("errors", []):
            parts.append(
                f"node {node_id} ({class_type}): {item.get('type')}: "
                f"{item.get('details') or item.get('message')}"
            )
    return "; ".join(parts)


__all__ = ["ComfyClient", "PreviewImage", "PromptSocket", "new_prompt_id"]
