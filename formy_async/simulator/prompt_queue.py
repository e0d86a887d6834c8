"""The prompt queue (a heap by number) and the in-memory, capped history."""

from __future__ import annotations

import asyncio
import copy
import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

JsonDict = dict[str, Any]


@dataclass
class QueueItem:
    """One queued prompt, serialised as ComfyUI's 5-list."""

    number: float
    prompt_id: str
    prompt: JsonDict
    extra_data: JsonDict
    outputs_to_execute: list[str]

    def as_list(self) -> list[Any]:
        return copy.deepcopy(
            [self.number, self.prompt_id, self.prompt, self.extra_data, self.outputs_to_execute]
        )


class PromptQueue:
    """Pending prompts, the running one and the history; `on_change` fires on queue changes."""

    def __init__(self, on_change: Callable[[], None], history_size: int) -> None:
        self._on_change = on_change
        self._history_size = history_size
        self._heap: list[tuple[float, str, int, QueueItem]] = []
        self._tie = itertools.count()
        self._wakeup = asyncio.Event()
        self.running: QueueItem | None = None
        self.history: dict[str, JsonDict] = {}
        self.number = 0
        #: the id of every prompt queued, in order, a resubmitted one again: what a test reads
        #: to see how often a graph was sent to run (ComfyUI keeps no such list)
        self.submitted: list[str] = []

    def next_number(self, number: Any, front: Any) -> float:
        """Priority the way POST /prompt computes it; only counter-based numbers advance it."""
        if number is not None:
            return float(number)
        value = -self.number if front else self.number
        self.number += 1
        return value

    def put(self, item: QueueItem) -> None:
        self.submitted.append(item.prompt_id)
        heapq.heappush(self._heap, (item.number, item.prompt_id, next(self._tie), item))
        self._wakeup.set()
        self._on_change()

    async def get(self) -> QueueItem:
        while not self._heap:
            self._wakeup.clear()
            await self._wakeup.wait()
        item = heapq.heappop(self._heap)[3]
        self.running = item
        self._on_change()
        return item

    def task_done(self, item: QueueItem, entry: JsonDict) -> None:
        self.running = None
        while len(self.history) >= self._history_size:
            self.history.pop(next(iter(self.history)))
        self.history[item.prompt_id] = entry
        self._on_change()

    def remaining(self) -> int:
        return len(self._heap) + (1 if self.running is not None else 0)

    def pending(self) -> list[list[Any]]:
        return [entry[3].as_list() for entry in self._heap]

    def running_items(self) -> list[list[Any]]:
        return [] if self.running is None else [self.running.as_list()]

    def wipe(self) -> None:
        self._heap = []
        self._on_change()

    def delete(self, prompt_id: Any) -> bool:
        for index, entry in enumerate(self._heap):
            if entry[1] != prompt_id:
                continue
            if len(self._heap) == 1:
                self.wipe()
            else:
                self._heap.pop(index)
                heapq.heapify(self._heap)
            # ComfyUI announces a deletion again after wiping, so the last one gives two statuses.
            self._on_change()
            return True
        return False

    def get_history(self, max_items: int | None = None, offset: int = -1) -> JsonDict:
        if offset < 0 and max_items is not None:
            offset = len(self.history) - max_items
        out: JsonDict = {}
        for index, (key, entry) in enumerate(self.history.items()):
            if index < offset:
                continue
            out[key] = entry
            if max_items is not None and len(out) >= max_items:
                break
        return copy.deepcopy(out)

    def history_entry(self, prompt_id: str) -> JsonDict:
        entry = self.history.get(prompt_id)
        return {} if entry is None else {prompt_id: copy.deepcopy(entry)}

    def delete_history(self, prompt_id: Any) -> None:
        if isinstance(prompt_id, str):
            self.history.pop(prompt_id, None)
