"""Runs every row, prints one table with PASS/FAIL per target, writes the figures as JSON.

`python -m bench [--quick] [--out PATH] [--rows relay,pickup,…]`
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from . import procs, service, stalls
from .config import Config
from .rows_events import concurrency_row, relay_row, wscap_row
from .rows_fairness import fairness_row
from .rows_peers import peers_row
from .rows_placement import placement_row
from .rows_queue import pickup_row, submission_row, throughput_row
from .rows_trace import trace_row
from .table import describe, render

ROWS: dict[str, Callable[[Config], Awaitable[dict[str, Any]]]] = {
    "relay": relay_row,
    "pickup": pickup_row,
    "throughput": throughput_row,
    "submission": submission_row,
    "concurrency": concurrency_row,
    "websockets": wscap_row,
    "peers": peers_row,
    "trace": trace_row,
    "placement": placement_row,
    "fairness": fairness_row,
}


async def run_rows(cfg: Config, names: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The machine's figures (see bench.machine) and each row's."""
    results: dict[str, Any] = {}
    # every process a row starts runs as a production install has it (see bench.service)
    procs.PYTHON = str(await service.ensure_installed())
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(), **_wake_penalty()}
    for name in names:
        t0 = time.monotonic()
        print(f"· {name} …", file=sys.stderr, flush=True)
        try:
            results[name] = await ROWS[name](cfg)
        except Exception as exc:
            traceback.print_exc()
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            await procs.stop_all()
        results[name]["seconds"] = round(time.monotonic() - t0, 1)
        if procs.STALL_FILES:
            results[name]["diagnostics"] = _diagnostics()
        print(f"  {name} done in {results[name]['seconds']} s", file=sys.stderr, flush=True)
    return machine, results


def _wake_penalty() -> dict[str, Any]:
    """bench.machine's figures, measured in the services' own environment."""
    argv = [procs.PYTHON, "-m", "bench.machine"]
    done = subprocess.run(argv, cwd=procs.ROOT, capture_output=True, text=True, check=True)
    figures: dict[str, Any] = json.loads(done.stdout)
    return figures


def _diagnostics() -> list[dict[str, Any]]:
    """The stall monitor's findings in each web and worker the row ran (`--diagnose`)."""
    out = []
    for role, path in procs.STALL_FILES:
        lines = (
            [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        )
        inside = [line for line in lines if stalls.within(line, procs.WINDOWS)]
        out.append(
            {
                "process": role,
                "file": str(path),
                "measured": stalls.summarise(inside),
                "whole_run": stalls.summarise(lines),
            }
        )
    procs.STALL_FILES.clear()
    procs.WINDOWS.clear()
    return out


def _raise_fd_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _clean(value: Any) -> Any:
    """JSON without NaN (null instead)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a ~1 minute smoke run")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results.json"))
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated: " + ",".join(ROWS))
    parser.add_argument("--reps", type=int, help="repetitions per figure (default 3, quick 1)")
    parser.add_argument(
        "--diagnose",
        action="store_true",
        help="run web and worker with the GC and event-loop stall monitor (bench.stalls)",
    )
    args = parser.parse_args()
    cfg = Config.quick() if args.quick else Config()
    if args.reps:
        cfg.reps = args.reps
    names = [name.strip() for name in args.rows.split(",") if name.strip()]
    unknown = [name for name in names if name not in ROWS]
    if unknown:
        parser.error(f"unknown rows: {', '.join(unknown)}")
    procs.DIAGNOSE = args.diagnose
    _raise_fd_limit()
    t0 = time.monotonic()
    machine, results = asyncio.run(run_rows(cfg, names))
    table, verdicts = render(results)
    print(describe(machine))
    print(table)
    document = {
        "config": cfg.__dict__,
        "machine": machine,
        "service_packages": service.installed(),
        "seconds": round(time.monotonic() - t0, 1),
        "verdicts": verdicts,
        "rows": results,
        "logs": str(procs.LOG_DIR),
    }
    Path(args.out).write_text(json.dumps(_clean(document), indent=2, default=str) + "\n")
    print(f"\nfigures written to {args.out}; process logs in {procs.LOG_DIR}")
