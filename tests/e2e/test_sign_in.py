"""Signing in on the page: a pasted token, a `#token=` link, and a session that ends.

A deployed server hands its page no token (no FORMY_PAGE_USER); these tests serve the page the
way it does by taking the development server's `<meta name="formy-token">` out of it.
(Serving a rewritten page through Playwright's routing would not do: Chromium then blocks the
page's WebSocket to 127.0.0.1 as a public page reaching the local network.)
"""

from __future__ import annotations

import pytest
from playwright.async_api import Page, expect

from formy_async.auth import mint_token

from ..conftest import TEST_SECRET
from .conftest import Pages

pytestmark = pytest.mark.asyncio(loop_scope="module")

# taken out as the parser adds it, before the page's (deferred, module) script reads it
WITHOUT_SERVED_TOKEN = """
new MutationObserver((records) => {
  for (const record of records) {
    for (const node of record.addedNodes) {
      if (node instanceof HTMLMetaElement && node.name === "formy-token") node.remove();
    }
  }
}).observe(document, {childList: true, subtree: true});
"""


async def open_deployed(pages: Pages, path: str = "/") -> Page:
    """The page as a deployed server serves it: with no token of its own, in every tab."""
    page = await pages.open("about:blank")
    await page.context.add_init_script(WITHOUT_SERVED_TOKEN)
    await page.goto(path)
    return page


async def sign_in(page: Page, token: str) -> None:
    await page.get_by_label("Access token").fill(token)
    await page.get_by_role("button", name="Sign in").click()


def socket_count(page: Page) -> object:
    return page.evaluate("window.__e2e.sockets.length")


async def test_without_a_token_the_page_asks_to_sign_in_and_is_not_live(pages: Pages) -> None:
    page = await open_deployed(pages)
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await expect(page.locator("#conn")).to_have_text("Signed out")
    await expect(page.get_by_role("button", name="Generate")).to_be_hidden()
    assert await socket_count(page) == 0, "a WebSocket was opened without a token"
    await pages.screenshot(page, "sign-in")


async def test_a_pasted_token_signs_in_and_is_kept_for_the_tab_only(pages: Pages) -> None:
    page = await open_deployed(pages)
    await sign_in(page, mint_token(TEST_SECRET, "bob", ttl=600))
    await expect(page.locator("#conn")).to_have_text("Live")
    await expect(page.locator("#signed-in")).to_contain_text("Signed in as bob")
    await expect(page.get_by_role("button", name="Generate")).to_be_visible()

    await page.reload()
    await expect(page.locator("#conn")).to_have_text("Live")
    other_tab = await page.context.new_page()
    await other_tab.goto("/")
    await expect(other_tab.get_by_role("heading", name="Sign in")).to_be_visible()


async def test_a_refused_token_says_why_and_stays_signed_out(pages: Pages) -> None:
    pages.allow(r"status of 401")
    page = await open_deployed(pages)
    await sign_in(page, "not-a-token")
    await expect(page.locator("#sign-in-reason")).to_contain_text("The token was refused")
    await expect(page.locator("#conn")).to_have_text("Signed out")
    assert await socket_count(page) == 0


async def test_a_token_link_followed_while_the_page_is_open_signs_in(pages: Pages) -> None:
    page = await open_deployed(pages)
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    token = mint_token(TEST_SECRET, "carol", ttl=600)
    await page.evaluate("token => { location.hash = `#token=${token}`; }", token)
    await expect(page.locator("#conn")).to_have_text("Live")
    await expect(page.locator("#signed-in")).to_contain_text("Signed in as carol")
    assert "token" not in page.url, "the token stayed in the address bar"


async def test_a_session_closed_with_4401_ends_without_retrying(pages: Pages) -> None:
    page = await open_deployed(pages)
    await sign_in(page, mint_token(TEST_SECRET, "dave", ttl=4))
    await expect(page.locator("#conn")).to_have_text("Live")
    # the server closes the socket with 4401 when the token expires
    reason = page.locator("#sign-in-reason")
    await expect(reason).to_have_text(
        "Your session ended: the token expired. Sign in again to go on.", timeout=15_000
    )
    await expect(page.locator("#conn")).to_have_text("Signed out")
    await expect(page.get_by_label("Access token")).to_be_focused()
    assert await socket_count(page) == 1, "the page tried again with a token that had ended"
    await pages.screenshot(page, "session-ended")


async def test_an_ended_token_falls_back_to_the_servers_own(pages: Pages) -> None:
    """On `formy-async run`'s page a link's token that ends gives way to the page's own."""
    token = mint_token(TEST_SECRET, "erin", ttl=4)
    page = await pages.open(f"/#token={token}")
    await expect(page.locator("#signed-in")).to_contain_text("Signed in as erin")
    await expect(page.locator("#signed-in")).to_contain_text(
        "Signed in as demo (this server's own token)", timeout=15_000
    )
    await expect(page.locator("#conn")).to_have_text("Live")


async def test_a_bad_stored_token_does_not_outrank_the_servers_own(pages: Pages) -> None:
    pages.allow(r"status of 401")
    page = await pages.open("/#token=not-a-token")
    await expect(page.locator("#signed-in")).to_contain_text("Signed in as demo")
    await expect(page.locator("#signed-in")).to_contain_text("The token was refused")
    await expect(page.locator("#conn")).to_have_text("Live")
    await page.reload()  # the refused token is gone from the tab
    await expect(page.locator("#signed-in")).not_to_contain_text("refused")
