"""A connection's socket: how much it may have unsent, and dropping one that takes nothing."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct


def reset(transport: asyncio.Transport) -> None:
    """Drop the connection with a TCP reset: the client learns at once, the kernel keeps nothing.

    A close frame, or even a FIN, would wait behind everything unsent, which is what the client
    does not read; the sends waiting on the transport end with ConnectionError.
    """
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):  # linger on, for 0 s: close() resets
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def bound_unsent(transport: asyncio.Transport | None, size: int) -> None:
    """Keep what a socket holds unsent near `size` twice over, so a slow reader's outbox fills.

    Linux grows a socket's send buffer up to 4 MB by itself: a client that stopped reading
    would be sent thousands of stale events into the kernel, never overflow, and get them all
    when it reads again. A fixed size turns that off (the kernel doubles it); the transport's
    own buffer pauses the writer past the same size.
    """
    if transport is None:  # the client is gone already
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
    transport.set_write_buffer_limits(high=size, low=size // 4)
