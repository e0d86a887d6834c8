"""A TCP proxy for fault injection: forwards to a server and can cut every connection at once."""

from __future__ import annotations

import asyncio
import contextlib


class TcpProxy:
    """Listens on a free port of 127.0.0.1 and forwards each connection to `target_port`."""

    def __init__(self, target_port: int, port: int = 0) -> None:
        self.target_port = target_port
        self.port = port
        self.writers: set[asyncio.StreamWriter] = set()
        self.upstream: dict[asyncio.StreamWriter, asyncio.StreamWriter] = {}  # client's → server's
        self.lingering: set[asyncio.StreamWriter] = set()  # server sides left open by `cut_unseen`
        self.server: asyncio.Server | None = None
        self.drops = 0

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self.writers |= {writer, up_writer}
        self.upstream[writer] = up_writer
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self.upstream.pop(writer, None)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        if writer in self.lingering:
            return  # the server has not noticed yet (see `cut_unseen`)
        writer.close()
        self.writers.discard(writer)

    def drop(self) -> None:
        """Cut every open connection, as a network fault or a restarting server would."""
        self.drops += 1
        for writer in list(self.writers):
            if (transport := writer.transport) is not None:
                transport.abort()
        self.writers.clear()

    def cut_unseen(self, for_seconds: float) -> None:
        """Cut every open connection on the client's side now and on the server's side only
        `for_seconds` later: a network fault that the client notices first, and the server
        once its writes time out."""
        self.drops += 1
        loop = asyncio.get_running_loop()
        for client_side, server_side in list(self.upstream.items()):
            self.lingering.add(server_side)
            loop.call_later(for_seconds, self._abort, server_side)
            self._abort(client_side)

    def _abort(self, writer: asyncio.StreamWriter) -> None:
        self.lingering.discard(writer)
        self.writers.discard(writer)
        if (transport := writer.transport) is not None:
            transport.abort()

    async def aclose(self) -> None:
        self.drop()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
