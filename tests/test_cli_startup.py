"""Starting the service's processes: what they print, and every start-up failure in one line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from formy_async.cli import SERVER_MODULES
from formy_async.embedded import settings_report
from formy_async.settings import Settings

from .conftest import ROOT, free_port

BIN = Path(sys.executable).parent
SERVER = str(ROOT / "server.py")
#: the variables a start-up reads, removed so that each test sets only its own
SETTINGS_ENV = ("SECRET_KEY", "FORMY_SECRET_KEY", "REDIS_URL", "FORMY_REDIS_URL", "PORT", "HOST")
#: a Python that cannot import the service's dependencies: a client-only install
CLIENT_ONLY = f"""
import importlib.abc, sys

class ServerDependencies(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {sorted(SERVER_MODULES)!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)

sys.meta_path.insert(0, ServerDependencies())
from formy_async.cli import main
main(sys.argv[1:])
"""


def environment(**values: str) -> dict[str, str]:
    """This environment less the settings, reading the checkout's workflows and entry points."""
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS_ENV}
    checkout = {"FORMY_WORKFLOWS_DIR": str(ROOT / "workflows"), "PYTHONPATH": str(ROOT)}
    return env | checkout | {"FORMY_LOG_FORMAT": "console"} | values


@pytest.fixture(autouse=True)
def _elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every process starts in an empty folder: a `.env` in the checkout is not read."""
    monkeypatch.chdir(tmp_path)


def run(*argv: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=environment(**env), capture_output=True, text=True, timeout=60)


def one_line_failure(result: subprocess.CompletedProcess[str]) -> str:
    """The failure's message, after checking it is exactly one line and no traceback."""
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if "[info" not in line]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another server is listening on."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield held.getsockname()[1]


# --- a missing or short SECRET_KEY ----------------------------------------------------------


def test_worker_without_a_secret_says_so_in_one_line() -> None:
    line = one_line_failure(run(str(BIN / "formy-async"), "worker"))
    assert line.startswith("formy-async worker: SECRET_KEY must be set")


def test_arq_check_without_a_secret_says_so_in_one_line() -> None:
    result = run(str(BIN / "arq"), "--check", "worker_settings.WorkerSettings")
    assert one_line_failure(result).startswith("formy-async worker: SECRET_KEY must be set")


def test_run_with_a_short_secret_says_so_in_one_line() -> None:
    line = one_line_failure(run(str(BIN / "formy-async"), "run", SECRET_KEY="short"))
    assert line.startswith("formy-async run: SECRET_KEY must be set to at least 32")


def test_web_process_names_a_bad_variable_in_one_line() -> None:
    line = one_line_failure(run(sys.executable, SERVER, PORT="eighty", SECRET_KEY="x" * 40))
    assert line.startswith("formy-async web: PORT: Input should be a valid integer")


# --- a port in use --------------------------------------------------------------------------


def test_run_on_a_port_in_use_says_so_in_one_line(taken_port: int) -> None:
    result = run(str(BIN / "formy-async"), "run", "--port", str(taken_port))
    assert one_line_failure(result) == (
        f"formy-async run: cannot listen on 127.0.0.1:{taken_port}: Address already in use "
        "(is another server running there? choose another port); set PORT or --port"
    )


def test_web_process_on_a_port_in_use_says_so_in_one_line(taken_port: int) -> None:
    result = run(
        sys.executable, SERVER, PORT=str(taken_port), HOST="127.0.0.1", SECRET_KEY="x" * 40
    )
    line = one_line_failure(result)
    assert line.startswith(f"formy-async web: cannot listen on 127.0.0.1:{taken_port}: Address")


def test_web_process_prints_where_it_listens(taken_port: int) -> None:
    # the line comes before the bind; a port in use then stops the process at once
    result = run(sys.executable, SERVER, PORT=str(taken_port), HOST="0.0.0.0", SECRET_KEY="x" * 40)
    assert result.stdout.splitlines()[0] == (
        f"formy-async web: serving on http://127.0.0.1:{taken_port} "
        "(and every other address of this machine); Ctrl+C stops it"
    )


# --- an unreachable ComfyUI -----------------------------------------------------------------


def test_doctor_on_an_unreachable_comfyui_says_so_in_a_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = run(str(BIN / "formy-async"), "doctor", "--comfyui", url)
    assert result.returncode == 1
    (failed,) = [line for line in result.stdout.splitlines() if "[FAIL]" in line]
    assert f"ComfyUI at {url} is unreachable: cannot connect" in failed
    assert "ClientConnectorError" not in result.stdout + result.stderr


# --- a client-only install ------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv", [["run"], ["worker"], ["token", "--user", "alice"], ["simulator"], ["doctor"]]
)
def test_service_commands_on_a_client_install_say_what_to_install(argv: list[str]) -> None:
    line = one_line_failure(run(sys.executable, "-c", CLIENT_ONLY, *argv))
    assert line.startswith(f"formy-async {argv[0]}: this is the service's command")
    assert "install formy-async[server]" in line


def test_client_commands_still_run_on_a_client_install() -> None:
    result = run(sys.executable, "-c", CLIENT_ONLY, "workflows", "--url", "http://127.0.0.1:1")
    assert result.returncode == 2
    assert "cannot reach the server" in result.stderr


# --- what `formy-async run` says ------------------------------------------------------------


def test_run_report_says_which_settings_came_from_env_file_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in (*SETTINGS_ENV, "COMFYUI_URL", "FORMY_COMFYUI_URL", "FORMY_MAX_JOBS"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / ".env").write_text("COMFYUI_URL=http://host.docker.internal:8188\n")
    monkeypatch.setenv("FORMY_MAX_JOBS", "7")
    report = settings_report(Settings(workflows_dir=ROOT / "workflows"))
    assert report.splitlines()[1:] == [
        "  Redis    in-process fake (REDIS_URL is not set)",
        "  ComfyUI  http://host.docker.internal:8188 (COMFYUI_URL from .env): no simulator",
        "  secret   a new one for this run (SECRET_KEY is not set)",
        "  also set: FORMY_MAX_JOBS from the environment",
        "  everything else: the defaults in formy_async/settings.py",
    ]


def test_run_prints_a_token_and_commands_that_work() -> None:
    """The printed `export` line and curl command, pasted into a shell, reach the stack."""
    port = free_port()
    env = environment()
    with subprocess.Popen(
        [str(BIN / "formy-async"), "run", "--port", str(port)],
        env=env,  # from tmp_path: the printed command names the venv's formy-async in full
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            lines = iter(proc.stdout.readline, "")
            export = next(line for line in lines if "export FORMY_URL=" in line).strip()
            submit, curl = next(lines).strip(), next(lines).strip()
            assert submit.startswith(f"{BIN / 'formy-async'} submit text_to_image")
            script = f"{export}\n{curl} -o /dev/null -w '%{{http_code}}'"
            answered = subprocess.run(
                ["bash", "-c", script], capture_output=True, text=True, timeout=30, env=env
            )
            assert answered.stdout == "200", answered.stderr
        finally:
            proc.terminate()
            proc.wait(30)
