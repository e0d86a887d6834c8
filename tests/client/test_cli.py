"""The `formy-async` client commands against a running stack: output, files and exit codes."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from formy_async.cli import parse_params, run_command
from formy_async.client.api import FormyClient
from formy_async.client.cli import FileParam
from formy_async.embedded import Stack
from formy_async.models import JobView

from ..conftest import ROOT, TOKEN, free_port
from ..helpers import api_session

SMALL = ["-p", "prompt=a red fox", "-p", "steps=2", "-p", "width=64", "-p", "height=64"]
EVENT_LINE = re.compile(r" *\d+ [a-z]+ +[a-z]+ +\d+%")  # not the stack's own log lines
LONG = ["-p", "prompt=a red fox", "-p", "steps=150", "-p", "width=64", "-p", "height=64"]


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every command calls the API as alice, as FORMY_TOKEN says."""
    monkeypatch.setenv("FORMY_TOKEN", TOKEN)


async def cli(*argv: str) -> int:
    """Run the command in-process (its own event loop, in a thread) and return its exit code."""
    try:
        return await asyncio.to_thread(run_command, list(argv))
    except SystemExit as exc:  # argparse's usage errors
        return int(exc.code or 0)


async def _submit_failing_job(stack: Stack) -> str:
    """A job that fails: its time limit is shorter than its sampler."""
    body = {
        "workflow": "text_to_image",
        "params": {"prompt": "a fox", "steps": 150, "width": 64, "height": 64},
        "time_limit": 0.3,
    }
    async with (
        api_session() as session,
        session.post(stack.url + "/api/jobs", json=body) as resp,
    ):
        job_id: str = (await resp.json())["id"]
    return job_id


async def _done_job(client: FormyClient) -> JobView:
    job = await client.submit("text_to_image", prompt="a fox", steps=2, width=64, height=64)
    return await client.wait(job.id)


# --- params -----------------------------------------------------------------------------------


def test_param_values_are_json_when_they_parse_else_strings() -> None:
    params = parse_params(["prompt=a red fox", "seed=7", "cfg=6.5", "tiled=true", 'name="7"'])
    assert params == {"prompt": "a red fox", "seed": 7, "cfg": 6.5, "tiled": True, "name": "7"}


async def test_param_without_equals_sign_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert await cli("submit", "text_to_image", "-p", "prompt") == 2
    assert "KEY=VALUE" in capsys.readouterr().err


# --- submit and wait --------------------------------------------------------------------------


async def test_submit_wait_out_exits_0_and_saves_the_outputs(
    stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "saved"
    code = await cli(
        "submit", "text_to_image", *SMALL, "--wait", "--out", str(out), "--url", stack.url
    )
    assert code == 0
    (folder,) = out.iterdir()  # the job's own
    (saved,) = folder.iterdir()
    assert saved.read_bytes()[:4] == b"\x89PNG"
    assert f"saved {saved}" in capsys.readouterr().out


async def test_two_runs_saved_into_one_folder_keep_both_outputs(
    stack: Stack, tmp_path: Path
) -> None:
    for _ in range(2):
        assert (
            await cli("submit", "text_to_image", *SMALL, "--out", str(tmp_path), "--url", stack.url)
            == 0
        )
    assert len(saved_images(tmp_path)) == 2


# --- uploads ----------------------------------------------------------------------------------


def saved_images(folder: Path) -> list[Path]:
    """The PNGs saved under `folder`, each in its job's folder."""
    return sorted(folder.glob("*/*.png"))


def png(path: Path, size: tuple[int, int] = (96, 64)) -> Path:
    from PIL import Image

    Image.new("RGB", size, (200, 80, 40)).save(path, "PNG")
    return path


async def test_upload_prints_the_upload_id_alone_on_stdout(
    stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli("upload", str(png(tmp_path / "fox.png")), "--url", stack.url) == 0
    captured = capsys.readouterr()
    (upload_id,) = [
        line for line in captured.out.splitlines() if re.fullmatch("[0-9a-f]{32}", line)
    ]
    assert f"uploaded fox.png: {upload_id} (96×64 png)" in captured.err


async def test_image_param_from_a_file_uploads_it_then_runs_the_job(
    stack: Stack, tmp_path: Path
) -> None:
    photo = png(tmp_path / "fox.png")
    out = tmp_path / "out"
    argv = ["submit", "upscale", "-p", f"image=@{photo}", "-p", "scale=2", "--out", str(out)]
    assert await cli(*argv, "--url", stack.url) == 0
    (saved,) = saved_images(out)
    from PIL import Image

    with Image.open(saved) as image:
        assert image.size == (192, 128)


async def test_image_param_from_a_missing_file_exits_2(
    stack: Stack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["submit", "upscale", "-p", f"image=@{tmp_path / 'nope.png'}", "--url", stack.url]
    assert await cli(*argv) == 2
    assert (
        f"cannot read {tmp_path / 'nope.png'}: No such file or directory" in capsys.readouterr().err
    )


def test_a_json_string_starting_with_at_is_not_a_file() -> None:
    assert parse_params(['handle="@fox"']) == {"handle": "@fox"}
    assert parse_params(["image=@fox.png"]) == {"image": FileParam(Path("fox.png"))}


async def test_waiting_off_a_terminal_prints_one_line_per_event(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli("submit", "text_to_image", *SMALL, "--wait", "--url", stack.url) == 0
    lines = capsys.readouterr().out.splitlines()
    events = [line.split() for line in lines if EVENT_LINE.match(line)]
    assert [int(e[0]) for e in events] == list(range(1, len(events) + 1))
    assert (events[0][1], events[-1][1]) == ("submitted", "done")
    assert "done in" in lines[-1]


async def test_json_flag_prints_each_event_and_the_job_as_json_lines(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli("submit", "text_to_image", *SMALL, "--wait", "--json", "--url", stack.url) == 0
    out = capsys.readouterr().out.splitlines()
    lines = [json.loads(line) for line in out if line.startswith("{")]  # not the stack's logs
    assert lines[-2]["type"] == "done"
    assert lines[-1]["status"] == "done"


async def test_submit_without_wait_prints_the_pending_job(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli("submit", "text_to_image", *SMALL, "-p", "seed=7", "--url", stack.url) == 0
    out = capsys.readouterr().out
    assert "status    pending" in out
    assert "workflow  text_to_image" in out


async def test_waiting_for_a_failed_job_exits_1_and_prints_its_error(
    slow_stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    job_id = await _submit_failing_job(slow_stack)
    assert await cli("wait", job_id, "--url", slow_stack.url) == 1
    err = capsys.readouterr().err
    assert f"job {job_id} failed" in err
    assert "time limit" in err


async def test_waiting_for_a_cancelled_job_exits_1(
    slow_stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    async with FormyClient(slow_stack.url, token=TOKEN) as client:
        job = await client.submit("text_to_image", prompt="a fox", steps=150, width=64, height=64)
        waiting = asyncio.create_task(cli("wait", job.id, "--url", slow_stack.url))
        await asyncio.sleep(0.5)
        await client.cancel(job.id)
        assert await waiting == 1
    assert f"job {job.id} cancelled" in capsys.readouterr().err


# --- the other commands -----------------------------------------------------------------------


async def test_status_prints_the_job(stack: Stack, capsys: pytest.CaptureFixture[str]) -> None:
    async with FormyClient(stack.url, token=TOKEN) as client:
        job = await _done_job(client)
    assert await cli("status", job.id, "--url", stack.url) == 0
    out = capsys.readouterr().out
    assert f"id        {job.id}" in out
    assert f"output    {job.outputs[0].url}" in out


async def test_unknown_job_exits_2_naming_the_error(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli("status", "nope", "--url", stack.url) == 2
    assert "job_not_found" in capsys.readouterr().err


async def test_invalid_params_exit_2_naming_each_param(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli("submit", "text_to_image", "-p", "steps=0", "--url", stack.url) == 2
    err = capsys.readouterr().err
    assert "invalid_params" in err
    assert "  steps:" in err


async def test_unreachable_server_exits_2_with_a_message(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert await cli("workflows", "--url", url, "--timeout", "5") == 2
    assert f"cannot reach the server at {url}" in capsys.readouterr().err


async def test_cancel_prints_the_job_and_exits_0(
    slow_stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    async with FormyClient(slow_stack.url, token=TOKEN) as client:
        job = await client.submit("text_to_image", prompt="a fox", steps=150, width=64, height=64)
        assert await cli("cancel", job.id, "--url", slow_stack.url) == 0
        assert (await client.wait(job.id)).status == "cancelled"
    assert f"id        {job.id}" in capsys.readouterr().out


async def test_cancelling_a_finished_job_exits_2(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    async with FormyClient(stack.url, token=TOKEN) as client:
        job = await _done_job(client)
    assert await cli("cancel", job.id, "--url", stack.url) == 2
    assert "job_finished" in capsys.readouterr().err


async def test_jobs_lists_at_most_limit_jobs_of_the_status(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    async with FormyClient(stack.url, token=TOKEN) as client:
        done = [(await _done_job(client)).id for _ in range(3)]
    assert await cli("jobs", "--status", "done", "--limit", "2", "--url", stack.url) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines() if "\t" in line]
    assert [(row[0], row[2]) for row in rows] == [(done[2], "done"), (done[1], "done")]


async def test_workflows_lists_names_and_params(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli("workflows", "--url", stack.url) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines() if "\t" in line]
    params = {name: params for name, _title, params in rows}
    assert "prompt" in params["text_to_image"]


async def test_url_comes_from_formy_url(
    stack: Stack, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FORMY_URL", stack.url)
    monkeypatch.setenv("FORMY_TOKEN", TOKEN)
    assert await cli("workflows") == 0
    assert "text_to_image" in capsys.readouterr().out


# --- Ctrl+C -----------------------------------------------------------------------------------


async def _interrupt_while_waiting(stack: Stack, answer: bytes) -> tuple[int, str, str]:
    """Run `submit --wait` as a process, press Ctrl+C once the sampler runs, answer the prompt."""
    # as from a terminal: a process inherits an ignored SIGINT (the tests run as a shell's
    # background job, say), and a handled one it does not
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "formy_async",
            "submit",
            "text_to_image",
            *LONG,
            "--wait",
            "--url",
            stack.url,
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    assert proc.stdout is not None
    while "KSampler" not in (line := (await proc.stdout.readline()).decode()):
        assert line, "the command ended before the sampler ran"
    proc.send_signal(signal.SIGINT)
    out, err = await proc.communicate(answer)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_ctrl_c_while_waiting_asks_and_cancels_the_job_on_yes(slow_stack: Stack) -> None:
    code, out, err = await _interrupt_while_waiting(slow_stack, b"y\n")
    assert code == 1
    assert "? [y/N]" in out
    assert " cancelled" in err


async def test_ctrl_c_answered_no_leaves_the_job_running(slow_stack: Stack) -> None:
    code, _, err = await _interrupt_while_waiting(slow_stack, b"\n")
    assert code == 130
    assert "goes on" in err
    async with FormyClient(slow_stack.url, token=TOKEN) as client:
        jobs: list[Any] = [job async for page in client.list() for job in page]
    assert jobs[0].status == "processing"
