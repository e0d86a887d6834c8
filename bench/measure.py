"""Turning raw receive records into latencies: joins with the emitter's send log."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp


@dataclass
class Joined:
    """Per-delivery latencies (seconds) and each job's step timeline."""

    send_to_browser: list[float] = field(default_factory=list)
    #: the path split where the event was published (see bench.listener): once per event,
    #: and once per delivery
    send_to_publish: list[float] = field(default_factory=list)
    publish_to_browser: list[float] = field(default_factory=list)
    #: job → (progress, send time) of each step
    steps: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    done: int = 0


async def fetch_sends(emitter: str) -> dict[str, dict[tuple[str, float], float]]:
    async with aiohttp.ClientSession() as http, http.get(f"{emitter}/bench/sends") as resp:
        raw: dict[str, list[list[Any]]] = await resp.json()
    return {pid: {(n, float(v)): float(t) for n, v, t in items} for pid, items in raw.items()}


def join_emitter(
    records: Iterable[tuple[float, int, str]],
    sends: dict[str, dict[tuple[str, float], float]],
    published: dict[tuple[str, int], float] | None = None,
) -> Joined:
    """Step events (node "1", value ≥ 1) matched to the emitter's send time of that step, and
    to when it was published, where `published` (bench.listener's) has it."""
    parsed = [(recv, json.loads(raw)) for recv, _, raw in records]
    prompts = {e["job_id"]: e["prompt_id"] for _, e in parsed if e.get("type") == "started"}
    out = Joined()
    counted: set[tuple[str, int]] = set()
    for recv, event in parsed:
        kind = event.get("type")
        if kind == "done":
            out.done += 1
        if kind != "progress" or event.get("node") != "1" or event.get("value", 0) < 1:
            continue
        sent = sends.get(prompts.get(event["job_id"], ""), {}).get(("1", float(event["value"])))
        if sent is None:
            continue
        out.send_to_browser.append(recv - sent)
        key = (event["job_id"], int(event["seq"]))
        moment = (published or {}).get(key)
        if moment is not None:
            if key not in counted:
                counted.add(key)
                out.send_to_publish.append(moment - sent)
            out.publish_to_browser.append(recv - moment)
        timeline = out.steps.setdefault(event["job_id"], [])
        if not timeline or timeline[-1][1] != sent:
            timeline.append((int(event["progress"]), sent))
    for timeline in out.steps.values():
        timeline[:] = sorted(set(timeline), key=lambda item: item[1])
    return out


def staleness(
    steps: dict[str, list[tuple[int, float]]], polls: dict[str, list[tuple[float, int, str]]]
) -> list[float]:
    """For each step: the first poll answer showing it (or later) minus the step's send time."""
    out: list[float] = []
    for job_id, timeline in steps.items():
        answers = polls.get(job_id, [])
        for progress, sent in timeline:
            for answered, seen, status in answers:
                if answered > sent and (seen >= progress or status == "done"):
                    out.append(answered - sent)
                    break
    return out


def stamped_latencies(records: Iterable[tuple[float, int, str]]) -> list[float]:
    """Publisher-stamped events (`value` = time.monotonic() at send): receive minus send."""
    out = []
    for recv, _, raw in records:
        event = json.loads(raw)
        if event.get("type") == "progress" and event.get("value", 0) > 1:
            out.append(recv - float(event["value"]))
    return out
