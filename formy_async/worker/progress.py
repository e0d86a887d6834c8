"""Turns ComfyUI's per-node progress into one job percentage that never goes down."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

#: node types whose steps dominate a run; the rest count as one unit each
HEAVY_NODES: Mapping[str, int] = {
    "KSampler": 10,
    "KSamplerAdvanced": 10,
    "SamplerCustom": 10,
    "SamplerCustomAdvanced": 10,
}


class ProgressTracker:
    """Weights each node of a graph and reports 0–99 as nodes run; 100 is left for `done`."""

    def __init__(self, graph: Mapping[str, Mapping[str, Any]], floor: int = 0) -> None:
        self.weights = {
            node_id: HEAVY_NODES.get(str(node.get("class_type")), 1)
            for node_id, node in graph.items()
        }
        self.total = sum(self.weights.values()) or 1
        self.finished: set[str] = set()
        self.current: str | None = None
        self.fraction = 0.0
        self.percent = min(99, floor)  # a retried job never shows less than it did

    @property
    def nodes_done(self) -> int:
        """Nodes finished or cached (the one running counts once it is over)."""
        return len(self.finished)

    def cached(self, nodes: Iterable[str]) -> int:
        self.finished.update(n for n in nodes if n in self.weights)
        return self._update()

    def executing(self, node: str) -> int:
        if self.current is not None:
            self.finished.add(self.current)
        self.current, self.fraction = node, 0.0
        return self._update()

    def step(self, node: str, value: float, maximum: float) -> int:
        if node != self.current:
            self.executing(node)
        if maximum > 0:
            self.fraction = min(1.0, max(0.0, value / maximum))
        return self._update()

    def _update(self) -> int:
        done: float = sum(self.weights[n] for n in self.finished)
        if self.current is not None and self.current not in self.finished:
            done += self.weights.get(self.current, 1) * self.fraction
        self.percent = max(self.percent, min(99, int(99 * done / self.total)))
        return self.percent
