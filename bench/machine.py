"""How much slower this machine runs the same Python work after a pause than back to back.

A service answers events that come tens of milliseconds apart, and between them the process
sleeps. On a shared virtual machine its memory goes cold meanwhile (other tenants take the
caches, the hypervisor's page-table caches with them), and the first pass over it afterwards
runs many times slower than the same code in a tight loop. Every relay and per-job figure pays
that on each hop, so the run reports it next to them: one progress event's Python work in a
worker (a ComfyUI message parsed, the event built and serialised) timed back to back and after
a pause. `python -m bench.machine` prints JSON; the bench runs it in the service environment.
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

from formy_async.comfy.messages import parse_text
from formy_async.models import Progress

PAUSE = 0.05  # about the gap between one session's progress messages
HOT = 2000
COLD = 40
_MESSAGE = json.dumps(
    {"type": "progress", "data": {"value": 3, "max": 20, "node": "3", "prompt_id": "p" * 36}}
)


def one_event() -> str:
    """The Python work of one progress event, short of its Redis round trip."""
    message = parse_text(_MESSAGE)
    assert message is not None
    event = Progress(job_id="j" * 32, node="3", node_type="KSampler", value=3.0, max=20.0)
    return event.model_dump_json()


def timed(pause: float, n: int) -> list[float]:
    """Microseconds of `one_event` n times, each after `pause` seconds of sleep (0: none)."""
    out = []
    for _ in range(n):
        if pause:
            time.sleep(pause)
        start = time.perf_counter()
        one_event()
        out.append((time.perf_counter() - start) * 1e6)
    return out


def wake_penalty() -> dict[str, Any]:
    timed(0, 200)  # imports and first calls out of the way
    hot, cold = timed(0, HOT), timed(PAUSE, COLD)
    hot_us, cold_us = statistics.median(hot), statistics.median(cold)
    return {
        "event_hot_us": round(hot_us, 1),
        "event_after_pause_us": round(cold_us, 1),
        "event_after_pause_p90_us": round(statistics.quantiles(cold, n=10)[-1], 1),
        "pause_ms": PAUSE * 1000,
        "penalty": round(cold_us / hot_us, 1),
    }


if __name__ == "__main__":
    print(json.dumps(wake_penalty()))
