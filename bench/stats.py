"""Percentiles of one run, and medians with their spread over repeated runs."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any


def percentile(samples: Sequence[float], q: float) -> float:
    """The q-th percentile (0–100) by linear interpolation; NaN for no samples."""
    if not samples:
        return math.nan
    ordered = sorted(samples)
    pos = (len(ordered) - 1) * q / 100
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def latency(samples_s: Sequence[float]) -> dict[str, float]:
    """p50/p99/mean/max of one run's latencies, in milliseconds."""
    ms = [s * 1000 for s in samples_s]
    return {
        "p50": percentile(ms, 50),
        "p99": percentile(ms, 99),
        "mean": statistics.fmean(ms) if ms else math.nan,
        "max": max(ms) if ms else math.nan,
        "n": len(ms),
    }


def over_runs(values: Sequence[float]) -> dict[str, Any]:
    """Median of repeated runs with the min–max spread, and every run's value."""
    clean = [v for v in values if not math.isnan(v)]
    if not clean:
        return {"median": math.nan, "min": math.nan, "max": math.nan, "runs": list(values)}
    return {
        "median": statistics.median(clean),
        "min": min(clean),
        "max": max(clean),
        "runs": [round(v, 4) for v in values],
    }


def field_over_runs(runs: Sequence[dict[str, Any]], key: str) -> dict[str, Any]:
    return over_runs([float(run[key]) for run in runs])


def fmt(summary: dict[str, Any], unit: str = "", digits: int = 1) -> str:
    """`12.3 (11.9–13.0) ms`: the median and its spread."""
    med = summary["median"]
    if isinstance(med, float) and math.isnan(med):
        return "n/a"
    lo, hi = summary["min"], summary["max"]
    suffix = f" {unit}" if unit else ""
    return f"{med:,.{digits}f} ({lo:,.{digits}f}–{hi:,.{digits}f}){suffix}"
