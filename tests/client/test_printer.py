"""What the client commands print on a terminal: aligned tables and a live progress bar."""

from __future__ import annotations

import asyncio
import io
import re

import pytest

from formy_async.client.printer import CLEAR_LINE, LiveBar, Printer
from formy_async.models import Done, JobView, Progress, Started

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]|\r")


class Terminal(io.StringIO):
    """What a terminal was sent."""

    def isatty(self) -> bool:
        return True


def job(job_id: str, workflow: str, status: str = "done") -> JobView:
    return JobView.model_validate(
        {
            "id": job_id,
            "user": "alice",
            "workflow": workflow,
            "params": {},
            "status": status,
            "progress": 0,
            "created_at": 1.0e9,
            "links": {},
        }
    )


def progress(value: float, of: float, percent: int) -> Progress:
    return Progress(
        job_id="j" * 32, seq=3, status="processing", progress=percent, node="3",
        node_type="KSampler", value=value, max=of,
    )  # fmt: skip


def test_a_table_on_a_terminal_lines_its_columns_up_under_a_bold_header() -> None:
    out = Terminal()
    Printer(out=out).jobs([job("a" * 32, "text_to_image"), job("b" * 32, "upscale", "failed")])
    header, first, second = out.getvalue().splitlines()
    assert header.startswith("\x1b[1m") and ANSI.sub("", header).split() == [
        "id", "workflow", "status", "created",
    ]  # fmt: skip
    assert first.index("text_to_image") == second.index("upscale") == 34
    assert first.index("done") == second.index("failed")


def test_a_table_off_a_terminal_is_tab_separated_without_a_header() -> None:
    out = io.StringIO()
    Printer(out=out).jobs([job("a" * 32, "text_to_image")])
    assert out.getvalue().split("\t")[:3] == ["a" * 32, "text_to_image", "done"]


def test_the_bar_shows_the_node_its_step_and_how_far_the_job_is() -> None:
    out = Terminal()
    bar = LiveBar(out, "jjjjjjjj")
    bar.show(progress(2, 4, 55))
    drawn = out.getvalue().rsplit(CLEAR_LINE, 1)[1]
    assert drawn.split()[:4] == ["KSampler", "━" * 16 + "─" * 14, "55%", "step"]
    assert "step 2/4" in drawn and drawn.endswith("0:00:00")


def test_the_bar_is_drawn_in_place_and_gone_when_the_job_ends() -> None:
    out = Terminal()
    with Printer(out=out).watch("j" * 32) as show:
        show(Started(job_id="j" * 32, seq=2, status="processing", prompt_id="p"))
        show(Done(job_id="j" * 32, seq=3, status="done", progress=100, outputs=[]))
    sent = out.getvalue()
    assert "\n" not in sent
    assert sent.count(CLEAR_LINE) == 4  # drawn first, once per event, then cleared
    assert sent.endswith(CLEAR_LINE) and "done" in sent and "100%" in sent


async def test_the_bar_keeps_counting_the_time_while_no_event_comes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(LiveBar, "TICK", 0.01)
    out = Terminal()
    with Printer(out=out).watch("j" * 32):
        await asyncio.sleep(0.1)
    assert out.getvalue().count(CLEAR_LINE) >= 4


def test_a_line_wider_than_the_terminal_is_cut_to_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    out = Terminal()
    LiveBar(out, "jjjjjjjj").show(progress(1, 4, 30))
    assert len(out.getvalue().rsplit(CLEAR_LINE, 1)[1]) == 39
