"""ComfyUI WebSockets of one prompt at a time, and those kept for a backend's next prompts."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import aiohttp


@dataclass
class PromptSocket:
    """A WebSocket open on ComfyUI, and the client id it was opened with."""

    client_id: str
    ws: aiohttp.ClientWebSocketResponse
    gaps: int = 0  # times it dropped and was opened again: ComfyUI replays nothing it missed
    handed_on: bool = False  # kept, once its prompt ended, for the next one: not closed here

    async def aclose(self) -> None:
        if not self.handed_on:
            await self.ws.close()


#: how long a spare socket waits for its prompt, from when it opened or its last prompt ended,
#: before it is opened anew (a server or proxy may drop a quiet socket; ComfyUI sends it every
#: queue change meanwhile)
SPARE_FOR = 20.0
#: sockets a backend's client keeps for its next prompts: the last one handed on, and the one
#: opened ahead for a prompt queued while another runs
SPARES = 2


class SpareSocket:
    """A socket opening (or open) for a prompt not yet queued: opened ahead, or handed on by a
    prompt that ended (`handed_on`)."""

    def __init__(self, client_id: str, opening: asyncio.Future[PromptSocket]) -> None:
        self.client_id = client_id
        self.born = time.monotonic()
        self.opening = opening

    @classmethod
    def opened(cls, open_socket: Callable[[str], Awaitable[PromptSocket]]) -> SpareSocket:
        """One opening now, of a fresh client id."""
        client_id = new_client_id()
        return cls(client_id, asyncio.ensure_future(open_socket(client_id)))

    @classmethod
    def handed_on(cls, socket: PromptSocket) -> SpareSocket:
        """The open socket of a prompt that ended: its client id receives nothing more of that
        prompt, and its next prompt's messages are told apart by their prompt id."""
        socket.handed_on = True  # the ended prompt's own close leaves it open
        opening: asyncio.Future[PromptSocket] = asyncio.get_running_loop().create_future()
        opening.set_result(PromptSocket(socket.client_id, socket.ws))
        return cls(socket.client_id, opening)

    def usable(self) -> bool:
        """Fresh, and open or still opening (a failed one is opened anew by whoever asks)."""
        if time.monotonic() - self.born > SPARE_FOR:
            return False
        if not self.opening.done():
            return True
        return self.opening.exception() is None and not self.opening.result().ws.closed

    def discard(self, closing: set[asyncio.Future[None]]) -> None:
        """Close it in the background (kept in `closing` until it is): nobody waits for that."""
        task = asyncio.ensure_future(self.aclose())
        closing.add(task)
        task.add_done_callback(closing.discard)

    async def aclose(self) -> None:
        await close_opening(self.opening)


async def close_opening(opening: asyncio.Future[PromptSocket]) -> None:
    """Close a socket that is open or still opening, for a prompt that will not be queued."""
    # a handshake cut off midway leaves its connection open: it is let finish, briefly
    await asyncio.wait({opening}, timeout=2)
    opening.cancel()
    with contextlib.suppress(BaseException):
        socket = await opening
        await socket.aclose()


def new_client_id() -> str:
    """A WebSocket client id of a socket's own: ComfyUI sends its prompts' messages to it."""
    return uuid.uuid4().hex
