"""What a prompt's own socket showed of its run: its history entry, when nothing was missed.

ComfyUI sends a prompt's `execution_start`, `execution_cached`, `executed` and final messages
to the socket of its client id with the same data it writes into the prompt's history (the
status messages are the same dicts, timestamps included). A socket that saw the prompt from
its start to `executing` null without a gap therefore holds its history entry already, and
reading `GET /history` after it only adds a round trip to every job's end. Two things it
cannot vouch for: the outputs of a cached output node (older servers re-send no `executed`
for it, and history is where its earlier files are listed) and anything but a success (a
failure's details come from history); for those, and after any gap, history is read.
"""

from __future__ import annotations

import functools
from typing import Any

from .messages import (
    ComfyMessage,
    Executed,
    Executing,
    ExecutionCached,
    ExecutionStart,
    ExecutionSuccess,
    HistoryEntry,
    HistoryStatus,
)


class Witness:
    """One prompt's messages as its socket delivered them (see the module's docstring)."""

    def __init__(self, prompt_id: str, graph: dict[str, Any], outputs: list[str] | None) -> None:
        self.prompt_id = prompt_id
        self._graph = graph
        self._outputs = outputs  # the output nodes the job collects (None: every node's)
        self._messages: list[tuple[str, dict[str, Any]]] = []
        self._ui: dict[str, dict[str, Any]] = {}
        self._started = self._succeeded = self._ended = False
        self._whole = True

    def saw(self, message: ComfyMessage) -> None:
        if isinstance(message, ExecutionStart):
            self._started = not self._messages  # only as the first status message
            self._status(message.type, {"timestamp": message.timestamp})
        elif isinstance(message, ExecutionCached):
            if any(self._may_hold_output(node) for node in message.nodes):
                self._whole = False  # its files are listed in history alone, on some servers
            self._status(message.type, {"nodes": message.nodes, "timestamp": message.timestamp})
        elif isinstance(message, ExecutionSuccess):
            self._succeeded = True
            self._status(message.type, {"timestamp": message.timestamp})
        elif isinstance(message, Executed):
            if message.node in self._ui:
                self._whole = False  # reported twice: history says how the lists combine
            self._ui[message.node] = message.output
        elif isinstance(message, Executing) and message.node is None:
            self._ended = True

    def missed(self) -> None:
        """The socket dropped (or went quiet) while the prompt ran: some messages never came."""
        self._whole = False

    def entry(self) -> HistoryEntry | None:
        """The prompt's history entry as the socket showed it: for a success seen whole, from
        `execution_start` to `executing` null; None when history must be read instead."""
        if not (self._whole and self._started and self._succeeded and self._ended):
            return None
        status = HistoryStatus(status_str="success", completed=True, messages=self._messages)
        return HistoryEntry(outputs=dict(self._ui), status=status)

    def _status(self, name: str, data: dict[str, Any]) -> None:
        if data.get("timestamp") is None:
            self._whole = False  # not the server's own message shape: trust its history
        self._messages.append((name, {**data, "prompt_id": self.prompt_id}))

    def _may_hold_output(self, node: str) -> bool:
        """Whether a cached node may be one whose UI output the job collects: one of the job's
        output nodes, or (none named) any node no other node reads, as output nodes are."""
        if self._outputs is not None:
            return node in self._outputs
        return node not in self._read

    @functools.cached_property
    def _read(self) -> set[str]:
        """The nodes some other node of the graph takes an input from."""
        return {
            str(value[0])
            for other in self._graph.values()
            if isinstance(other, dict)
            for value in (other.get("inputs") or {}).values()
            if isinstance(value, list) and value
        }
