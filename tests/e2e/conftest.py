"""Browser fixtures: the whole stack as a subprocess, and headless Chromium watching its console.

Everything here lives for the module, on the module's event loop: starting Chromium and the stack
once keeps the browser tests fast. Each test gets fresh browser contexts (no shared storage).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Error,
    Page,
    async_playwright,
)

from ..conftest import ROOT, TEST_SECRET, free_port

CHROMIUM = os.environ.get("FORMY_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = ROOT / "test-artifacts" / "e2e"
STEP_DELAY = "0.2"  # seconds per sampler step: slow enough to watch the bar move

# Test-side instruments, installed before the page's own script runs: every WebSocket the page
# opens, and every value a job's bar and every text its step line shows (each change, even
# within a burst of replayed events, and whatever the test was busy with meanwhile).
INSTRUMENTS = """
window.__e2e = {sockets: [], steps: [], bars: []};
const NativeWebSocket = window.WebSocket;
window.WebSocket = class extends NativeWebSocket {
  constructor(...args) {
    super(...args);
    window.__e2e.sockets.push(this);
  }
};
new MutationObserver((records) => {
  for (const record of records) {
    const target = record.target;
    if (!(target instanceof Element)) continue;
    const job = target.closest("[data-job-id]")?.dataset.jobId;
    if (record.type === "attributes" && target.localName === "progress") {
      window.__e2e.bars.push({job, value: Number(target.getAttribute("value"))});
    } else if (record.type === "childList" && target.classList.contains("step")) {
      for (const node of record.addedNodes) window.__e2e.steps.push({job, text: node.data});
    }
  }
}).observe(document, {childList: true, subtree: true, attributeFilter: ["value"]});
"""


class Server:
    """The `formy-async run` process: embedded fake Redis, simulator, web app and worker."""

    def __init__(self, storage: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in {"REDIS_URL", "FORMY_REDIS_URL", "COMFYUI_URL", "FORMY_COMFYUI_URL"}
        }
        env |= {
            "FORMY_SIMULATOR_STEP_DELAY": STEP_DELAY,
            "SECRET_KEY": TEST_SECRET,
            "FORMY_MAX_CONCURRENT_TASKS_PER_USER": "50",
            "FORMY_STORAGE_DIR": str(storage),
            "FORMY_LOG_FORMAT": "json",
        }
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            [str(ROOT / ".venv" / "bin" / "formy-async"), "run", "--port", str(self.port)],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"formy-async run exited early:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError(f"formy-async run was not ready after {timeout} s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def log_tail(self, lines: int = 40) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="module")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, artifacts: Path) -> Iterator[Server]:
    running = Server(tmp_path_factory.mktemp("storage"), artifacts / "server.log")
    try:
        running.wait_ready()
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def chromium() -> str:
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"no Chromium at {CHROMIUM}: run scripts/ensure-chromium or set FORMY_CHROMIUM")
    return CHROMIUM


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser(chromium: str) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=chromium, headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        await launched.close()


class Pages:
    """Opens pages on the stack in fresh contexts and keeps every console error or warning.

    A test that provokes an error on purpose (a 422, say) names it with `allow(pattern)`.
    """

    def __init__(self, browser: Browser, base_url: str, artifacts: Path) -> None:
        self.browser = browser
        self.base_url = base_url
        self.artifacts = artifacts
        self.contexts: list[BrowserContext] = []
        self.problems: list[str] = []
        self.allowed: list[re.Pattern[str]] = []

    async def open(self, path: str = "/", **context_options: Any) -> Page:
        context = await self.browser.new_context(base_url=self.base_url, **context_options)
        context.set_default_timeout(10_000)
        await context.add_init_script(INSTRUMENTS)
        self.contexts.append(context)
        page = await context.new_page()
        page.on("console", self._on_console)
        page.on("pageerror", lambda exc: self.problems.append(f"uncaught: {exc}"))
        await page.goto(path)
        return page

    def allow(self, pattern: str) -> None:
        self.allowed.append(re.compile(pattern))

    def _on_console(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.problems.append(f"{message.type}: {message.text} ({message.location.get('url')})")

    def unexpected_problems(self) -> list[str]:
        return [p for p in self.problems if not any(a.search(p) for a in self.allowed)]

    async def screenshot(self, page: Page, name: str, *, full_page: bool = True) -> None:
        await page.screenshot(path=self.artifacts / f"{name}.png", full_page=full_page)

    async def aclose(self) -> None:
        for context in self.contexts:
            with contextlib.suppress(Error):
                await context.close()


@pytest_asyncio.fixture(loop_scope="module")
async def pages(browser: Browser, server: Server, artifacts: Path) -> AsyncIterator[Pages]:
    """Pages on the stack; the test fails if any logged a console error or warning."""
    opened = Pages(browser, server.url, artifacts)
    yield opened
    await opened.aclose()
    assert opened.unexpected_problems() == [], "the browser console reported problems"
