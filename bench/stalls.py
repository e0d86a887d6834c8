"""What stalls a process's event loop: garbage collections and blocking calls, with evidence.

Installed in a web or worker process by `bench.traced --stalls` (`python -m bench --diagnose`
starts every web and worker that way). Two probes write JSON lines to the file they are given:

- every garbage collection that takes `GC_MIN` or more: `{"gc": generation, "ms", "collected",
  "t"}`, timed by `gc.callbacks`;
- every stall of the event loop of `STALL_MIN` or more: `{"stall": ms, "t", "stacks"}`. A
  watchdog thread asks the loop to run a no-op (`call_soon_threadsafe`) every `EVERY` seconds
  and, while it waits, samples the main thread's stack every millisecond; `stacks` counts the
  samples by the innermost frames, so it says what held the loop (a GC shows as the line that
  allocated). A stall that a collection overlaps is tagged with it (`"gc_ms"`).

The watchdog costs a wake-up per millisecond only while the loop is late: on time, one per
`EVERY`.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import json
import sys
import threading
import time
import traceback
from typing import IO, Any

GC_MIN = 0.001
STALL_MIN = 0.005
EVERY = 0.005
FRAMES = 4  # innermost frames kept per sample


class StallMonitor:
    """The gc timer and the loop watchdog of one process."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.lock = threading.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.main = threading.main_thread().ident
        self.main_tid = threading.main_thread().native_id
        self._gc_began = self._gc_cpu = 0.0
        #: collections that ended recently: (began, ended) perf_counter, for tagging stalls
        self._recent: collections.deque[tuple[float, float]] = collections.deque(maxlen=64)

    def write(self, record: dict[str, Any]) -> None:
        with self.lock:
            self.out.write(json.dumps(record) + "\n")

    # --- garbage collections ------------------------------------------------------------------

    def on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_began = time.perf_counter()
            self._gc_cpu = time.thread_time()
            return
        ended = time.perf_counter()
        took = ended - self._gc_began
        self._recent.append((self._gc_began, ended))
        if took >= GC_MIN:
            record = {
                "gc": info.get("generation"),
                "ms": round(took * 1000, 2),
                # wall time counts a descheduled process; CPU time is what the collection cost
                "cpu_ms": round((time.thread_time() - self._gc_cpu) * 1000, 2),
                "collected": info.get("collected"),
                "thread": threading.current_thread().name,
                "t": time.time(),
            }
            if info.get("generation") == 2:  # the heap a full collection walked (O(1) to read)
                record["blocks"] = sys.getallocatedblocks()
            self.write(record)

    def _gc_within(self, begin: float, end: float) -> float:
        return sum(
            min(e, end) - max(b, begin) for b, e in list(self._recent) if e > begin and b < end
        )

    # --- the loop's watchdog ------------------------------------------------------------------

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Watch this loop (the first one the process runs)."""
        if self.loop is None:
            self.loop = loop
            threading.Thread(target=self._watch, name="stall-watchdog", daemon=True).start()

    def _watch(self) -> None:
        slept = time.perf_counter() - EVERY  # when this thread last went to sleep
        while True:
            loop = self.loop
            if loop is None or loop.is_closed():
                return
            ran = threading.Event()
            asked = time.perf_counter()
            # past its sleep this thread could not run either: the GIL was held (a collection
            # in another thread, a long C call) or the process was not scheduled
            frozen = asked - slept - EVERY
            if frozen >= STALL_MIN:
                self.write(
                    {
                        "stall": round(frozen * 1000, 2),
                        "frozen": True,
                        "gc_ms": round(1000 * self._gc_within(slept, asked), 2),
                        "t": time.time(),
                        "stacks": [],
                    }
                )
            try:
                loop.call_soon_threadsafe(ran.set)
            except RuntimeError:  # the loop closed meanwhile
                return
            stacks: collections.Counter[str] = collections.Counter()
            sched = self._schedstat()
            while not ran.wait(0.001):
                if time.perf_counter() - asked >= STALL_MIN:
                    stacks[self._stack()] += 1
            late = time.perf_counter() - asked
            if late >= STALL_MIN:
                on_cpu, waiting = (b - a for a, b in zip(sched, self._schedstat(), strict=True))
                self.write(
                    {
                        "stall": round(late * 1000, 2),
                        "gc_ms": round(1000 * self._gc_within(asked, asked + late), 2),
                        # the loop's thread meanwhile: running, or runnable but not scheduled
                        "on_cpu_ms": round(on_cpu / 1e6, 2),
                        "runqueue_ms": round(waiting / 1e6, 2),
                        "t": time.time(),
                        "stacks": stacks.most_common(3),
                    }
                )
            slept = time.perf_counter()
            time.sleep(EVERY)

    def _schedstat(self) -> tuple[int, int]:
        """Nanoseconds the loop's thread has run, and waited to run (/proc/…/schedstat)."""
        try:
            with open(f"/proc/self/task/{self.main_tid}/schedstat") as stat:
                ran, waited, _ = stat.read().split()
        except (OSError, ValueError):
            return 0, 0
        return int(ran), int(waited)

    def _stack(self) -> str:
        frame = sys._current_frames().get(self.main or 0)
        if frame is None:
            return "?"
        summary = traceback.extract_stack(frame)[-FRAMES:]
        return " < ".join(
            f"{_short(entry.filename)}:{entry.lineno} {entry.name}" for entry in reversed(summary)
        )


def _short(filename: str) -> str:
    for marker in ("site-packages/", "formy_async/", "lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    return filename


def install(path: str) -> StallMonitor:
    """Start timing collections now, and watch the loop as soon as one runs."""
    monitor = StallMonitor(open(path, "a", buffering=1))  # noqa: SIM115 (open for the process)
    gc.callbacks.append(monitor.on_gc)
    run_forever = asyncio.BaseEventLoop.run_forever

    def watched(self: asyncio.BaseEventLoop) -> None:
        monitor.attach(self)
        run_forever(self)

    asyncio.BaseEventLoop.run_forever = watched  # type: ignore[method-assign]
    return monitor


def within(line: dict[str, Any], windows: list[tuple[float, float]]) -> bool:
    """Whether a record (a stall or a collection, `t` at its end) overlaps a window."""
    end = float(line.get("t", 0))
    begin = end - float(line.get("stall", line.get("ms", 0))) / 1000
    return any(begin < b_end and end > b_begin for b_begin, b_end in windows)


def summarise(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """The collections and stalls of one process: counts, worst, and the commonest stacks."""
    gcs = [line for line in lines if "gc" in line]
    stalls = [line for line in lines if "stall" in line]
    by_gen: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for line in gcs:
        by_gen[str(line["gc"])].append(line)
    stacks: collections.Counter[str] = collections.Counter()
    for line in stalls:
        for stack, count in line["stacks"]:
            stacks[stack] += count
    blocks = [int(line["blocks"]) for line in gcs if "blocks" in line]
    return {
        "gc_over_1ms": {gen: _collections(found) for gen, found in sorted(by_gen.items())},
        "allocated_blocks_at_full_gc": max(blocks, default=0),
        "stalls_over_5ms": len(stalls),
        "stall_ms_on_cpu": round(sum(float(s.get("on_cpu_ms", 0)) for s in stalls), 1),
        "stall_ms_runqueue": round(sum(float(s.get("runqueue_ms", 0)) for s in stalls), 1),
        "stall_max_ms": max((float(s["stall"]) for s in stalls), default=0.0),
        # by wall clock: the watchdog's own `gc_ms` can miss a collection whose callback had not
        # run yet when the loop answered
        "stalls_with_gc": sum(_overlaps_gc(s, gcs) > 1 for s in stalls),
        "stall_ms_in_gc": round(sum(_overlaps_gc(s, gcs) for s in stalls), 1),
        "worst": sorted(stalls, key=lambda s: -float(s["stall"]))[:5],
        "stacks": stacks.most_common(8),
    }


def _collections(found: list[dict[str, Any]]) -> dict[str, Any]:
    wall = [float(line["ms"]) for line in found]
    cpu = [float(line.get("cpu_ms", line["ms"])) for line in found]
    return {
        "n": len(found),
        "max_ms": max(wall),
        "max_cpu_ms": max(cpu),
        "total_ms": round(sum(wall), 1),
        "total_cpu_ms": round(sum(cpu), 1),
        "threads": sorted({str(line.get("thread")) for line in found}),
    }


def _interval(line: dict[str, Any], key: str) -> tuple[float, float]:
    end = float(line["t"])
    return end - float(line[key]) / 1000, end


def _overlaps_gc(stall: dict[str, Any], gcs: list[dict[str, Any]]) -> float:
    """Milliseconds of the stall that collections covered."""
    begin, end = _interval(stall, "stall")
    covered = 0.0
    for line in gcs:
        b, e = _interval(line, "ms")
        covered += max(0.0, min(e, end + 0.002) - max(b, begin))
    return 1000 * covered
