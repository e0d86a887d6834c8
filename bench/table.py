"""One table of every row: ours, the baseline of the same run, the ratio, the target, PASS/FAIL.

Each figure is the median over the repeated runs, with the min–max spread in parentheses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .stats import fmt

Line = tuple[str, str, str, str, str, str, str]
HEADER: Line = ("row", "figure", "ours", "baseline (same run)", "ratio", "target", "result")


def _med(summary: dict[str, Any] | None, key: str) -> float:
    if not summary or key not in summary:
        return math.nan
    return float(summary[key]["median"])


def _cell(summary: dict[str, Any] | None, key: str, unit: str, digits: int = 1) -> str:
    if not summary or key not in summary:
        return "n/a"
    return fmt(summary[key], unit, digits)


def _ratio(a: float, b: float, digits: int = 2, suffix: str = "×") -> str:
    if math.isnan(a) or math.isnan(b) or b == 0:
        return "n/a"
    return f"{a / b:.{digits}f}{suffix}"


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def _check(value: float, test: Any) -> bool | None:
    return None if math.isnan(value) else bool(test(value))


def _relay(r: dict[str, Any], lines: list[Line], verdicts: dict[str, Any]) -> None:
    ours, bare = r.get("ours"), r.get("bare")
    o50, o99, b99 = _med(ours, "p50"), _med(ours, "p99"), _med(bare, "p99")
    lines.append(("event relay", "send→browser p50", _cell(ours, "p50", "ms", 2),
                  "bare chain " + _cell(bare, "p50", "ms", 2),
                  _ratio(o50, _med(bare, "p50")), "", ""))  # fmt: skip
    ok = _check(o99 / b99 if b99 else math.nan, lambda x: x <= 2)
    lines.append(("", "send→browser p99", _cell(ours, "p99", "ms", 2),
                  "bare chain " + _cell(bare, "p99", "ms", 2), _ratio(o99, b99),
                  "≤ 2× bare", _verdict(ok)))  # fmt: skip
    # split where the event is published: the web's hop is the part the bare chain also does
    lines.append(("", "worker hop: send→published p50/p99",
                  f"{_med(ours, 'worker_hop_p50'):.2f} / {_med(ours, 'worker_hop_p99'):.2f} ms",
                  "", "", "", ""))  # fmt: skip
    w99 = _med(ours, "web_hop_p99")
    lines.append(("", "web hop: published→browser p50/p99",
                  f"{_med(ours, 'web_hop_p50'):.2f} / {w99:.2f} ms",
                  "bare chain p99 " + _cell(bare, "p99", "ms", 2), _ratio(w99, b99),
                  "", ""))  # fmt: skip
    p50 = _med(ours, "poll_p50")
    fresher = _check(p50 / o50 if o50 else math.nan, lambda x: x >= 100)
    lines.append(("", "1 s polling staleness p50", _cell(ours, "poll_p50", "ms", 0),
                  f"mean {_med(ours, 'poll_mean'):.0f}, p99 {_med(ours, 'poll_p99'):.0f} ms",
                  _ratio(p50, o50, 0, "× fresher"), "≥ 100× fresher",
                  _verdict(fresher)))  # fmt: skip
    verdicts["relay_p99_within_2x_bare"] = ok
    verdicts["relay_100x_fresher_than_polling"] = fresher


def _pickup(r: dict[str, Any], lines: list[Line], verdicts: dict[str, Any]) -> None:
    ours, arq = r.get("ours"), r.get("arq")
    o50 = _med(ours, "p50")
    ok = _check(o50, lambda x: x <= 15)
    lines.append(("pickup", "submit→started p50", _cell(ours, "p50", "ms"),
                  "arq 0.5 s poll " + _cell(arq, "p50", "ms", 0), _ratio(o50, _med(arq, "p50")),
                  "≤ 15 ms", _verdict(ok)))  # fmt: skip
    lines.append(("", "submit→started p99", _cell(ours, "p99", "ms"),
                  "arq 0.5 s poll " + _cell(arq, "p99", "ms", 0),
                  _ratio(_med(ours, "p99"), _med(arq, "p99")), "", ""))  # fmt: skip
    verdicts["pickup_p50_le_15ms"] = ok


def _throughput(r: dict[str, Any], lines: list[Line], verdicts: dict[str, Any]) -> None:
    ours, arq = r.get("ours"), r.get("arq")
    o, a = _med(ours, "jobs_s"), _med(arq, "jobs_s")
    ok = _check(o / a if a else math.nan, lambda x: x >= 0.4)
    lines.append(("throughput", "jobs/s, 1 worker, bench ComfyUI", _cell(ours, "jobs_s", "/s", 0),
                  "arq no-op " + _cell(arq, "jobs_s", "/s", 0), _ratio(100 * o, a, 0, "%"),
                  "≥ 40% of arq", _verdict(ok)))  # fmt: skip
    sim = r.get("ours_simulator")
    lines.append(("", "jobs/s on the simulator", _cell(sim, "jobs_s", "/s", 0),
                  "(one prompt at a time)", _ratio(100 * _med(sim, "jobs_s"), a, 0, "%"), "",
                  ""))  # fmt: skip
    verdicts["throughput_ge_40pct_arq"] = ok


def _submission(r: dict[str, Any], lines: list[Line], verdicts: dict[str, Any]) -> None:
    ours, bare = r.get("ours"), r.get("bare")
    o, b = _med(ours, "rps"), _med(bare, "rps")
    ok = _check(o / b if b else math.nan, lambda x: x >= 0.7)
    lines.append(("submission", "POST /api/jobs req/s", _cell(ours, "rps", "/s", 0),
                  "bare + 1 enqueue " + _cell(bare, "rps", "/s", 0), _ratio(100 * o, b, 0, "%"),
                  "≥ 70% of bare", _verdict(ok)))  # fmt: skip
    verdicts["submission_ge_70pct_bare"] = ok


def _concurrency(r: dict[str, Any], lines: list[Line], verdicts: dict[str, Any]) -> None:
    first = True
    for n, summary in r.items():
        if not isinstance(summary, dict) or "rss_mb" not in summary:
            continue
        rss = _med(summary, "rss_mb")
        top = n == "500"
        ok = _check(rss, lambda x: x < 200) if top else None
        idle = f"idle {_med(summary, 'idle_rss_mb'):.0f} MB"
        lines.append(("worker concurrency" if first else "", f"{n} sessions: peak RSS",
                      _cell(summary, "rss_mb", "MB"), idle, "", "< 200 MB" if top else "",
                      _verdict(ok) if top else ""))  # fmt: skip
        lines.append(("", f"{n} sessions: send→browser p50/p99",
                      f"{_med(summary, 'p50'):.1f} / {_med(summary, 'p99'):.1f} ms",
                      "", "", "", ""))  # fmt: skip
        if n == "500":
            verdicts["worker_500_sessions_lt_200mb"] = ok
        first = False


def _websockets(r: dict[str, Any], lines: list[Line], verdicts: dict[str, Any]) -> None:
    first = True
    for n, pair in r.items():
        if not isinstance(pair, dict) or "ours" not in pair:
            continue
        ours, bare = pair["ours"], pair["bare"]
        kb, p99 = _med(ours, "kb_per_socket"), _med(ours, "p99")
        top = n == "10000"
        ok_kb = _check(kb, lambda x: x <= 20) if top else None
        ok_p99 = _check(p99, lambda x: x <= 10) if top else None
        lines.append(("WebSocket capacity" if first else "", f"{n} sockets: KB/socket",
                      _cell(ours, "kb_per_socket", "KB"),
                      "bare " + _cell(bare, "kb_per_socket", "KB"),
                      _ratio(kb, _med(bare, "kb_per_socket")), "≤ 20 KB" if top else "",
                      _verdict(ok_kb) if top else ""))  # fmt: skip
        lines.append(("", f"{n} sockets: delivery p99", _cell(ours, "p99", "ms"),
                      "bare " + _cell(bare, "p99", "ms"), _ratio(p99, _med(bare, "p99")),
                      "≤ 10 ms" if top else "", _verdict(ok_p99) if top else ""))  # fmt: skip
        if top:
            verdicts["ws_10k_le_20kb"] = ok_kb
            verdicts["ws_10k_p99_le_10ms"] = ok_p99
        first = False


def _both(summary: dict[str, Any] | None, key: str, digits: int = 1) -> str:
    """`p50 / p95 ms`, each the median over runs, the p95's spread in brackets."""
    p50, p95 = _med(summary, f"{key}_p50"), _med(summary, f"{key}_p95")
    if math.isnan(p50):
        return "—"
    assert summary is not None
    low, high = summary[f"{key}_p95"]["min"], summary[f"{key}_p95"]["max"]
    return f"{p50:.{digits}f} / {p95:.{digits}f} ms [{low:.{digits}f}–{high:.{digits}f}]"


def _peer_cell(summary: dict[str, Any] | None, key: str, unit: str, digits: int = 1) -> str:
    return "—" if math.isnan(_med(summary, key)) else _cell(summary, key, unit, digits)


#: a figure of one system's cost, held to 1.5x the proxy's: (key, label, unit)
_COSTS = (
    ("cpu_ms", "CPU per job, service processes", "ms"),
    ("idle_rss_mb", "RSS idle", "MB"),
    ("backlog_rss_mb", "RSS peak under the backlog", "MB"),
)


@dataclass
class _AgainstProxy:
    """Lines of one system's figures against the proxy's, and their verdicts (`prefix`_…)."""

    ours: Any
    prox: Any
    lines: list[Line]
    verdicts: dict[str, Any]
    prefix: str
    #: the baseline column, given how to show one system's figure (default: the proxy's alone)
    baselines: Any = None

    def baseline(self, text: Any) -> str:
        return f"proxy {text(self.prox)}" if self.baselines is None else str(self.baselines(text))

    def ratio(self, key: str) -> str:
        return _ratio(_med(self.ours, key), _med(self.prox, key), 2, "× proxy")

    def overheads(self, *, strict: bool = False, row: str = "") -> None:
        """Overhead p50 and p95: at or below the proxy's (`strict`: below)."""
        for q in ("p50", "p95"):
            key = f"overhead_{q}"
            diff = _med(self.ours, key) - _med(self.prox, key)
            ok = _check(diff, (lambda x: x < 0) if strict else (lambda x: x <= 0))
            self.lines.append((row if q == "p50" else "", f"overhead over execution {q}",
                               _cell(self.ours, key, "ms"),
                               self.baseline(lambda s, k=key: _cell(s, k, "ms")), self.ratio(key),
                               "< proxy" if strict else "≤ proxy", _verdict(ok)))  # fmt: skip
            self.verdicts[f"{self.prefix}_overhead_{q}_{'lt' if strict else 'le'}_proxy"] = ok

    def costs(self) -> None:
        """CPU per job and RSS: within 1.5× the proxy's."""
        for key, label, unit in _COSTS:
            ok = _check(_med(self.ours, key) / _med(self.prox, key), lambda x: x <= 1.5)
            self.lines.append(("", label, _peer_cell(self.ours, key, unit),
                               self.baseline(lambda s, k=key, u=unit: _peer_cell(s, k, u)),
                               self.ratio(key), "≤ 1.5× proxy", _verdict(ok)))  # fmt: skip
            self.verdicts[f"{self.prefix}_{key}_le_1_5x_proxy"] = ok


def _peers(r: dict[str, Any], lines: list[Line], verdicts: dict[str, Any]) -> None:
    _peers_ours(r, lines, verdicts)
    _peers_v2(r, lines, verdicts)
    _peers_one(r, lines, verdicts)


def _peers_ours(r: dict[str, Any], lines: list[Line], verdicts: dict[str, Any]) -> None:
    direct, prox, ours = r.get("direct"), r.get("proxy"), r.get("formy")

    def baselines(text: Any) -> str:
        return f"direct {text(direct)} · proxy {text(prox)}"

    def ratio(key: str) -> str:
        return _ratio(_med(ours, key), _med(prox, key), 2, "× proxy")

    lines.append(("per job vs peers", "submit→prompt on ComfyUI p50/p95", _both(ours, "to_prompt"),
                  baselines(lambda s: _both(s, "to_prompt")), ratio("to_prompt_p50"), "",
                  ""))  # fmt: skip
    lines.append(("", "ComfyUI done→client done p50/p95", _both(ours, "to_client"),
                  baselines(lambda s: _both(s, "to_client")), ratio("to_client_p50"), "",
                  ""))  # fmt: skip
    against = _AgainstProxy(ours, prox, lines, verdicts, "peers", baselines)
    against.overheads()
    ok = _check(_med(ours, "idle_p50") - _med(direct, "idle_p50"), lambda x: x <= 5)
    lines.append(("", "GPU idle between prompts, backlog p50", _cell(ours, "idle_p50", "ms"),
                  baselines(lambda s: _cell(s, "idle_p50", "ms")), ratio("idle_p50"),
                  "≤ direct + 5 ms", _verdict(ok)))  # fmt: skip
    verdicts["peers_gpu_idle_le_direct_plus_5ms"] = ok
    ok = _check(_med(ours, "busy_pct"), lambda x: x >= 99)
    lines.append(("", "GPU busy, backlog of 1 s jobs", _peer_cell(ours, "busy_pct", "%", 2),
                  f"direct {_peer_cell(direct, 'busy_pct', '%', 2)}",
                  _ratio(_med(ours, "busy_pct"), _med(direct, "busy_pct"), 3, "× direct"),
                  "≥ 99 %", _verdict(ok)))  # fmt: skip
    verdicts["peers_gpu_busy_ge_99pct"] = ok
    against.costs()


def _peers_v2(r: dict[str, Any], lines: list[Line], verdicts: dict[str, Any]) -> None:
    """The same job through our Comfy API v2 routes against comfy-api-proxy's."""
    v2, prox = r.get("formy_v2"), r.get("proxy")
    if v2 is None:
        return

    def ratio(key: str) -> str:
        return _ratio(_med(v2, key), _med(prox, key), 2, "× proxy")

    lines.append(("v2 API vs proxy", "submit→prompt on ComfyUI p50/p95", _both(v2, "to_prompt"),
                  "proxy " + _both(prox, "to_prompt"), ratio("to_prompt_p50"), "",
                  ""))  # fmt: skip
    lines.append(("", "ComfyUI done→client done p50/p95", _both(v2, "to_client"),
                  "proxy " + _both(prox, "to_client"), ratio("to_client_p50"), "",
                  ""))  # fmt: skip
    _AgainstProxy(v2, prox, lines, verdicts, "v2").overheads(strict=True)
    lines.append(("", "execution start→first progress p50/p95", _both(v2, "first_progress"),
                  "proxy " + _both(prox, "first_progress"), ratio("first_progress_p50"), "",
                  ""))  # fmt: skip
    lines.append(("", "GPU idle between prompts, backlog p50", _cell(v2, "idle_p50", "ms"),
                  "proxy " + _cell(prox, "idle_p50", "ms"), ratio("idle_p50"), "",
                  ""))  # fmt: skip


def _peers_one(r: dict[str, Any], lines: list[Line], verdicts: dict[str, Any]) -> None:
    """formy-async as one process (FORMY_WEB_WORKER), as the proxy runs, against the proxy."""
    one, prox = r.get("formy_one"), r.get("proxy")
    if one is None:
        return

    against = _AgainstProxy(one, prox, lines, verdicts, "one")
    against.overheads(row="one process vs proxy")
    against.costs()


def _trace(r: dict[str, Any], lines: list[Line], verdicts: dict[str, Any]) -> None:
    for index, step in enumerate(r.get("timeline", [])):
        lines.append(("job trace (medians)" if index == 0 else "", step["step"],
                      f"+{step['since_previous_ms']:.2f} ms", f"at {step['at_ms']:.2f} ms",
                      "", "", ""))  # fmt: skip


def _placement(r: dict[str, Any], lines: list[Line], verdicts: dict[str, Any]) -> None:
    ours, naive = r.get("formy"), r.get("first_free")
    ratio = _med(naive, "makespan_s") / _med(ours, "makespan_s")
    ok = _check(ratio, lambda x: x >= 2)
    lines.append(("model affinity", "makespan", _cell(ours, "makespan_s", "s"),
                  "first free backend " + _cell(naive, "makespan_s", "s"),
                  "n/a" if math.isnan(ratio) else f"{ratio:.2f}× shorter", "≥ 2× shorter",
                  _verdict(ok)))  # fmt: skip
    lines.append(("", "model loads", _cell(ours, "switches", "", 0),
                  "first free backend " + _cell(naive, "switches", "", 0),
                  _ratio(_med(ours, "switches"), _med(naive, "switches")), "", ""))  # fmt: skip
    verdicts["placement_makespan_2x_shorter"] = ok


def _fairness(r: dict[str, Any], lines: list[Line], verdicts: dict[str, Any]) -> None:
    ours, fifo = r.get("formy"), r.get("fifo")
    job = float(r.get("job_s", math.nan))
    # the one running and the one queued ahead on ComfyUI, with a job's worth to spare
    ok = _check(_med(ours, "b_wait_s"), lambda x: x <= 3 * job)
    lines.append(("fair share", "B's wait behind A's backlog", _cell(ours, "b_wait_s", "s", 2),
                  "first in, first out " + _cell(fifo, "b_wait_s", "s", 2),
                  _ratio(_med(ours, "b_wait_s"), _med(fifo, "b_wait_s")),
                  f"≤ about one job ({job:g} s) per backend", _verdict(ok)))  # fmt: skip
    verdicts["fairness_b_waits_about_one_job"] = ok


RENDERERS = {
    "relay": _relay,
    "pickup": _pickup,
    "throughput": _throughput,
    "submission": _submission,
    "concurrency": _concurrency,
    "websockets": _websockets,
    "peers": _peers,
    "trace": _trace,
    "placement": _placement,
    "fairness": _fairness,
}


def describe(machine: dict[str, Any]) -> str:
    """The machine line above the table: its size, and how it treats a woken process."""
    return (
        f"machine: {machine['cpus']} CPUs, Python {machine['python']}; one progress event's "
        f"Python work takes {machine['event_hot_us']:.0f} µs back to back, "
        f"{machine['event_after_pause_us']:.0f} µs after a {machine['pause_ms']:.0f} ms pause "
        f"(×{machine['penalty']:.0f}, see bench.machine)"
    )


def render(results: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    lines: list[Line] = [HEADER]
    verdicts: dict[str, Any] = {}
    for name, row in results.items():
        if "error" in row:
            lines.append((name, "error", row["error"][:60], "", "", "", "FAIL"))
            continue
        RENDERERS[name](row, lines, verdicts)
    widths = [max(len(line[i]) for line in lines) for i in range(len(HEADER))]
    rule = "+".join("-" * (w + 2) for w in widths)
    out = [rule]
    for index, line in enumerate(lines):
        if index > 1 and line[0]:
            out.append(rule)
        out.append(" | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)))
        if index == 0:
            out.append(rule)
    out.append(rule)
    return "\n".join(out), verdicts
