"""ComfyUI WebSockets of one prompt each, and the one opened ahead for a backend's next prompt."""

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

    async def aclose(self) -> None:
        await self.ws.close()


#: how long a socket opened ahead waits for its prompt before it is opened anew (a server or
#: proxy may drop a quiet socket; ComfyUI sends it every queue change meanwhile)
SPARE_FOR = 20.0


class SpareSocket:
    """A socket opening (or open) for a prompt not yet queued."""

    def __init__(self, open_socket: Callable[[str], Awaitable[PromptSocket]]) -> None:
        self.client_id = new_client_id()
        self.born = time.monotonic()
        self.opening: asyncio.Future[PromptSocket] = asyncio.ensure_future(
            open_socket(self.client_id)
        )

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
    """A WebSocket client id of a socket's own: ComfyUI sends a prompt's messages to it."""
    return uuid.uuid4().hex
