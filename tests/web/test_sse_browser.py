"""A real EventSource in headless Chromium: it follows a job, and resumes by itself when cut."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Browser, Page, async_playwright

from formy_async.embedded import Stack

from ..conftest import TOKEN
from ..helpers import api_session, get_json, submit, wait_until
from ..proxy import TcpProxy

CHROMIUM = os.environ.get("FORMY_CHROMIUM", "/usr/bin/chromium")

FOLLOW = """
(url) => {
  window.seen = [];
  window.opens = 0;
  window.ended = false;
  const source = new EventSource(url);
  source.onopen = () => { window.opens += 1; };
  const types = ["submitted", "queued", "started", "progress", "preview", "retrying", "output",
                 "done", "failed", "cancelled"];
  for (const type of types) {
    source.addEventListener(type, (message) => {
      window.seen.push([Number(message.lastEventId), type, JSON.parse(message.data).seq]);
      if (["done", "failed", "cancelled"].includes(type)) {
        source.close();
        window.ended = true;
      }
    });
  }
}
"""


@pytest.fixture
def chromium() -> str:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (set FORMY_CHROMIUM)")
    return CHROMIUM


@pytest.fixture
async def browser(chromium: str) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=chromium, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        yield launched
        await launched.close()


@pytest.fixture
async def proxy(slow_stack: Stack) -> AsyncIterator[TcpProxy]:
    """The browser reaches the stack through this proxy, which can cut its connections."""
    port = urlsplit(slow_stack.url).port
    assert port is not None
    cutter = TcpProxy(port)
    await cutter.start()
    yield cutter
    await cutter.aclose()


async def seen(page: Page) -> list[Any]:
    found: list[Any] = await page.evaluate("window.seen")
    return found


async def test_an_eventsource_resumes_after_a_cut_with_nothing_lost_or_repeated(
    slow_stack: Stack, proxy: TcpProxy, browser: Browser
) -> None:
    base = f"http://127.0.0.1:{proxy.port}"
    async with api_session() as session:
        job = await submit(session, slow_stack.url, prompt="a fox", steps=150, width=64, height=64)
        page = await browser.new_page()
        await page.goto(f"{base}/healthz")
        await page.evaluate(FOLLOW, f"/api/jobs/{job['id']}/events?token={TOKEN}")

        async def some_arrived() -> bool:
            return len(await seen(page)) >= 5

        await wait_until(some_arrived, timeout=15)
        proxy.drop()  # the stream breaks mid-job; the EventSource reconnects by itself

        async def ended() -> bool:
            return bool(await page.evaluate("window.ended"))

        await wait_until(ended, timeout=30, every=0.1)
        events, opens = await seen(page), await page.evaluate("window.opens")
        _, log = await get_json(session, f"{slow_stack.url}/api/jobs/{job['id']}/events")
        await page.close()
    assert opens >= 2  # it did reconnect
    assert [(i, t) for i, t, _ in events] == [(e["seq"], e["type"]) for e in log]
    assert [seq for _, _, seq in events] == list(range(1, len(log) + 1))
    assert events[-1][1] == "done"
    assert proxy.drops == 1
