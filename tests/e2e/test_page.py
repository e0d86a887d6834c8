"""The browser page against the whole stack: submit, watch, cancel, reload, reconnect, errors."""

from __future__ import annotations

import io
import json
import re
import urllib.request
from typing import Any

import pytest
from playwright.async_api import Locator, Page, Request, expect

from formy_async.auth import mint_token

from ..conftest import TEST_SECRET
from .conftest import Pages, Server

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def submit(page: Page, **params: Any) -> Locator:
    """Fill the form with `params`, press Generate; the new job's card."""
    for name, value in params.items():
        await page.locator(f"#param-{name}").fill(str(value))
    async with page.expect_response(
        lambda r: r.url.endswith("/api/jobs") and r.request.method == "POST"
    ) as answer:
        await page.get_by_role("button", name="Generate").click()
    response = await answer.value
    assert response.status == 202, await response.text()
    job = page.locator(f'#jobs > li[data-job-id="{(await response.json())["id"]}"]')
    await expect(job).to_be_visible()
    return job


async def wait_for_step(job: Locator, pattern: str) -> None:
    """Until the card's step line matches `pattern` (checked on every frame: steps are quick)."""
    await job.locator(".step").evaluate(
        """(line, pattern) => new Promise((resolve) => {
            const check = () => new RegExp(pattern).test(line.textContent)
                ? resolve() : requestAnimationFrame(check);
            check();
        })""",
        pattern,
    )


async def progress_of(job: Locator) -> int:
    value: int = await job.locator("progress").evaluate("bar => bar.value")
    return value


async def shown(page: Page, job: Locator, what: str) -> list[Any]:
    """Every bar value (`bars`) or step text (`steps`) the job's card showed on this page."""
    job_id = await job.get_attribute("data-job-id")
    key = "value" if what == "bars" else "text"
    return await page.evaluate(
        f"id => window.__e2e.{what}.filter((r) => r.job === id).map((r) => r.{key})", job_id
    )


async def expect_image_loaded(image: Locator) -> None:
    await image.scroll_into_view_if_needed()
    await expect(image).to_be_visible()
    await image.evaluate(
        "img => img.complete && img.naturalWidth > 0 ? null : new Promise((ok, fail) => {"
        " img.addEventListener('load', ok); img.addEventListener('error', fail); })"
    )
    assert await image.evaluate("img => img.naturalWidth") > 0


def get_json(server: Server, path: str) -> Any:
    token = mint_token(TEST_SECRET, "demo", ttl=600)  # the page's own user
    request = urllib.request.Request(
        server.url + path, headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


async def test_every_control_has_a_label(pages: Pages) -> None:
    page = await pages.open()
    await expect(page.locator("#fields .field").first).to_be_visible()
    unlabelled = await page.evaluate(
        """() => [...document.querySelectorAll("input, select, textarea, button, progress")]
            .filter((c) => !(c.labels?.length || c.getAttribute("aria-label")
                || c.getAttribute("aria-labelledby") || c.textContent.trim()))
            .map((c) => c.outerHTML)"""
    )
    assert unlabelled == []
    await expect(page.get_by_label("Workflow")).to_have_value("text_to_image")
    prompt = page.get_by_role("textbox", name="Prompt", exact=True)
    await expect(prompt).to_have_value("a red fox in the snow")
    await pages.screenshot(page, "form")


async def test_job_shows_progress_then_its_image(pages: Pages) -> None:
    page = await pages.open()
    job = await submit(page, steps=10, width=512, height=512)
    await wait_for_step(job, r"KSampler step [4-8]/10")
    await pages.screenshot(page, "running")
    await expect(job).to_have_attribute("data-status", "done", timeout=15_000)

    values = await shown(page, job, "bars")
    assert values == sorted(values), "the bar went backwards"
    assert len(set(values)) >= 5, f"the bar hardly moved: {values}"
    assert values[-1] == await progress_of(job) == 100
    steps = await shown(page, job, "steps")
    assert "CheckpointLoaderSimple" in steps
    assert [t for t in steps if "step" in t] == [f"KSampler step {k}/10" for k in range(1, 11)]
    image = job.locator(".outputs img").first
    await expect_image_loaded(image)
    await pages.screenshot(page, "done")
    async with page.expect_popup() as popup:
        await image.click()
    full = await popup.value
    assert re.search(r"/api/jobs/\w+/outputs/[\w.]+\.png\?exp=\d+&sig=\w+$", full.url)
    await full.close()


async def test_running_job_can_be_cancelled(pages: Pages) -> None:
    page = await pages.open()
    job = await submit(page, steps=40, width=256, height=256)
    await wait_for_step(job, r"KSampler step ([3-9]|\d\d)/40")
    cancel = job.get_by_role("button", name=re.compile("^Cancel job"))
    await cancel.click()

    await expect(job).to_have_attribute("data-status", "cancelled")
    await expect(job.locator(".badge")).to_have_text("Cancelled")
    await expect(cancel).to_be_hidden()
    assert await progress_of(job) < 100
    await pages.screenshot(page, "cancelled")


async def test_reload_mid_job_continues_the_bar(pages: Pages) -> None:
    page = await pages.open()
    job = await submit(page, steps=16, width=256, height=256)
    await wait_for_step(job, r"KSampler step [3-6]/16")
    before = await progress_of(job)

    await page.reload()
    await expect(job).to_be_visible()
    await expect(job).to_have_attribute("data-status", "done", timeout=15_000)
    values = await shown(page, job, "bars")
    assert min(values) >= before, "the bar went back after the reload"
    assert len({v for v in values if v < 100}) >= 3, f"the bar did not move on: {values}"
    assert values[-1] == await progress_of(job) == 100
    await expect_image_loaded(job.locator(".outputs img").first)


async def test_websocket_reconnects_and_shows_every_step_once(pages: Pages) -> None:
    page = await pages.open()
    job = await submit(page, steps=12, width=256, height=256)
    await wait_for_step(job, r"KSampler step [2-4]/12")
    await page.evaluate("window.__e2e.sockets.at(-1).close()")
    await expect(page.locator("#conn")).to_have_text(re.compile("reconnecting"))

    await page.wait_for_function(
        "window.__e2e.sockets.length === 2 && window.__e2e.sockets[1].readyState === 1"
    )
    await expect(page.locator("#conn")).to_have_text("Live")
    await expect(job).to_have_attribute("data-status", "done", timeout=15_000)
    sampler = [t for t in await shown(page, job, "steps") if t.startswith("KSampler step")]
    assert sampler == [f"KSampler step {k}/12" for k in range(1, 13)]


async def test_bad_param_shows_the_servers_message(pages: Pages) -> None:
    pages.allow(r"status of 422")  # the browser logs every 4xx answer it gets
    page = await pages.open()
    await page.locator("#param-steps").fill("999")
    await page.get_by_role("button", name="Generate").click()

    await expect(page.locator("#form-error")).to_contain_text("invalid params")
    steps = page.locator('[data-param="steps"]')
    await expect(steps.locator(".field-error")).to_have_text(
        "Input should be less than or equal to 150"
    )
    await expect(page.locator("#param-steps")).to_have_attribute("aria-invalid", "true")
    await expect(page.locator("#param-steps")).to_be_focused()
    await pages.screenshot(page, "error")


async def test_phone_screen_has_no_horizontal_scroll(pages: Pages) -> None:
    phone = {"width": 390, "height": 844}
    page = await pages.open(viewport=phone, is_mobile=True, has_touch=True, device_scale_factor=2)
    job = await submit(page, steps=4, width=256, height=256)
    await expect(job).to_have_attribute("data-status", "done")
    await expect_image_loaded(job.locator(".outputs img").first)
    await page.evaluate("window.scrollTo(0, 0)")

    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page is {width}px wide on a 390px screen"
    await pages.screenshot(page, "phone")


async def test_image_param_uploads_and_shows_a_thumbnail(pages: Pages, server: Server) -> None:
    from PIL import Image

    workflows = {w["name"]: w for w in get_json(server, "/api/workflows")["workflows"]}
    assert "upscale" in workflows, "no upscale workflow is served"
    page = await pages.open()
    await page.get_by_label("Workflow").select_option("upscale")
    picture = io.BytesIO()
    Image.new("RGB", (96, 64), (200, 80, 40)).save(picture, "PNG")
    file_input = page.locator('[data-param="image"] input[type="file"]')
    async with page.expect_response(lambda r: r.url.endswith("/api/uploads")) as answer:
        await file_input.set_input_files(
            {"name": "fox.png", "mimeType": "image/png", "buffer": picture.getvalue()}
        )
    assert (await answer.value).status == 201
    await expect_image_loaded(page.locator('[data-param="image"] img.thumb'))

    await pages.screenshot(page, "upload")
    job = await submit(page)
    await expect(job).to_have_attribute("data-status", "done", timeout=15_000)
    await expect_image_loaded(job.locator(".outputs img").first)


async def test_model_picker_lists_the_servers_models(pages: Pages, server: Server) -> None:
    models = get_json(server, "/api/models")
    page = await pages.open()
    picker = page.locator("#param-model")
    await expect(picker).to_be_enabled()
    await expect(picker).to_have_js_property("tagName", "SELECT")
    options = await picker.locator("option").all_inner_texts()
    assert set(models["checkpoints"]) <= set(options)


async def test_model_picker_says_when_no_server_has_the_default_model(
    pages: Pages, server: Server
) -> None:
    page = await pages.open("about:blank")
    await page.route(
        "**/api/models",
        lambda route: route.fulfill(json={"checkpoints": ["other.safetensors"]}),
    )
    await page.goto("/")
    options = page.locator("#param-model option")  # once the list came (not "Loading models…")
    await expect(options).to_have_text(
        ["sd_xl_base_1.0.safetensors (on no ComfyUI server)", "other.safetensors"]
    )


async def test_model_picker_falls_back_to_text_when_models_fail(
    pages: Pages, server: Server
) -> None:
    (text_to_image,) = [
        w for w in get_json(server, "/api/workflows")["workflows"] if w["name"] == "text_to_image"
    ]
    assert text_to_image["params"]["properties"]["model"].get("x-formy-models") == "checkpoints"
    pages.allow(r"status of 503")
    page = await pages.open("about:blank")
    await page.route(
        "**/api/models",
        lambda route: route.fulfill(
            status=503,
            json={"error": {"code": "comfy_unavailable", "message": "ComfyUI does not answer"}},
        ),
    )
    await page.goto("/")
    picker = page.locator("#param-model")
    await expect(picker).to_have_js_property("tagName", "INPUT")
    await expect(page.get_by_role("textbox", name="Model", exact=True)).to_be_editable()


async def test_token_in_the_address_goes_with_every_request(pages: Pages) -> None:
    page = await pages.open("about:blank")
    fetches: list[Request] = []
    page.on("request", lambda r: fetches.append(r) if r.resource_type == "fetch" else None)
    token = mint_token(TEST_SECRET, "bob", ttl=600)
    await page.goto(f"/#token={token}")
    await expect(page.locator("#conn")).to_have_text("Live")
    assert "token" not in page.url, "the token stayed in the address bar"
    assert f"token={token}" in await page.evaluate("window.__e2e.sockets[0].url")

    await page.reload()  # from localStorage now
    await expect(page.locator("#conn")).to_have_text("Live")
    assert f"token={token}" in await page.evaluate("window.__e2e.sockets[0].url")
    assert len(fetches) >= 4
    assert {await r.header_value("authorization") for r in fetches} == {f"Bearer {token}"}


# --- the small things a person notices -------------------------------------------------------


async def test_cfg_is_labelled_in_capitals(pages: Pages) -> None:
    page = await pages.open()
    await expect(page.get_by_label("CFG", exact=True)).to_be_visible()


async def test_file_pickers_do_not_talk_of_upload_ids(pages: Pages) -> None:
    page = await pages.open()
    for workflow in ("upscale", "head_swap", "background_change", "pose_change"):
        await page.get_by_label("Workflow").select_option(workflow)
        await expect(page.locator('[data-param="image"] input[type="file"]')).to_be_visible()
        assert "upload id" not in await page.locator("#fields").inner_text(), workflow


async def test_prompt_is_kept_across_a_reload(pages: Pages) -> None:
    page = await pages.open()
    prompt = page.get_by_role("textbox", name="Prompt", exact=True)
    await prompt.fill("a blue whale at dawn")
    await page.reload()
    await expect(prompt).to_have_value("a blue whale at dawn")


async def test_generate_is_on_screen_on_a_laptop_for_every_workflow(
    pages: Pages, server: Server
) -> None:
    page = await pages.open(viewport={"width": 1366, "height": 657})
    for workflow in get_json(server, "/api/workflows")["workflows"]:
        await page.get_by_label("Workflow").select_option(workflow["name"])
        await page.evaluate("window.scrollTo(0, 0)")
        await expect(page.get_by_role("button", name="Generate")).to_be_in_viewport()
    await pages.screenshot(page, "laptop", full_page=False)


async def test_a_cancelled_jobs_bar_is_not_left_in_the_running_colour(pages: Pages) -> None:
    page = await pages.open()
    job = await submit(page, steps=40, width=256, height=256)
    await wait_for_step(job, r"KSampler step ([3-9]|\d\d)/40")
    await job.get_by_role("button", name=re.compile("^Cancel job")).click()
    await expect(job).to_have_attribute("data-status", "cancelled")
    running, cancelled = await job.locator("progress").evaluate(
        """bar => {
            const probe = document.createElement("progress");
            document.querySelector("#jobs").append(probe);
            const running = getComputedStyle(probe).accentColor;
            probe.remove();
            return [running, getComputedStyle(bar).accentColor];
        }"""
    )
    assert cancelled != running


async def test_a_finished_job_offers_download_run_again_and_reuse_seed(pages: Pages) -> None:
    page = await pages.open()
    job = await submit(page, steps=3, width=128, height=128, seed=4242)
    await expect(job).to_have_attribute("data-status", "done", timeout=15_000)
    download = job.get_by_role("link", name=re.compile("^Download .* of job"))
    await expect(download).to_have_attribute("download", re.compile(r"\.png$"))
    async with page.expect_download() as saving:
        await download.click()
    assert (await saving.value).suggested_filename.endswith(".png")

    await page.locator("#param-seed").fill("")
    await job.get_by_role("button", name=re.compile("^Reuse the settings and seed")).click()
    await expect(page.locator("#param-seed")).to_have_value("4242")
    await expect(page.locator("#param-steps")).to_have_value("3")

    async with page.expect_response(lambda r: r.url.endswith("/api/jobs")) as answer:
        await job.get_by_role("button", name=re.compile("^Run job .* again")).click()
    again = await (await answer.value).json()
    assert again["params"]["steps"] == 3
    assert again["params"]["seed"] != 4242  # a new one: the same seed gives the same image
    await expect(page.locator(f'#jobs > li[data-job-id="{again["id"]}"]')).to_be_visible()


async def test_the_input_image_is_shown_on_its_jobs_card(pages: Pages) -> None:
    from PIL import Image

    page = await pages.open()
    await page.get_by_label("Workflow").select_option("upscale")
    picture = io.BytesIO()
    Image.new("RGB", (96, 64), (40, 120, 200)).save(picture, "PNG")
    async with page.expect_response(lambda r: r.url.endswith("/api/uploads")):
        await page.locator('[data-param="image"] input[type="file"]').set_input_files(
            {"name": "sea.png", "mimeType": "image/png", "buffer": picture.getvalue()}
        )
    job = await submit(page)
    await expect_image_loaded(job.locator("img.input"))
    await page.reload()  # a card drawn from the job list shows it too
    await expect_image_loaded(job.locator("img.input"))
