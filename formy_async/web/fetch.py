"""Image params given as URLs: fetched by the service, guarded as webhooks are, stored as uploads.

Every address a URL's host resolves to must be public (unless FORMY_URL_INPUTS_ALLOW_PRIVATE),
the request goes to the very address checked (no second lookup to rebind), redirects are
followed by hand and each new URL is checked again; the body may not exceed the upload limit
nor the whole fetch FORMY_URL_INPUT_TIMEOUT. What arrives gets an upload's checks. Nothing is
stored until every URL of the request has passed, and any failure is a 422 naming the param.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, NoReturn

import aiohttp
from aiohttp import web
from yarl import URL

from ..errors import (
    CorruptImage,
    ImageTooLarge,
    ImageUrlError,
    ImageUrlInvalid,
    ImageUrlNotAnImage,
    ImageUrlRefused,
    ImageUrlTooLarge,
    ImageUrlUnreachable,
    UnsupportedImage,
    WebhookUrlInvalid,
    WebhookUrlRefused,
    WebhookUrlUnresolvable,
)
from ..images import CheckedImage, check_upload
from ..settings import Settings
from ..webhook_urls import IPAddress, checked
from ..workflows import Workflow
from .context import SETTINGS
from .uploads import store_upload

MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 * 1024
#: an upload id that validates, standing in for a URL while the other params are checked
_PLACEHOLDER = "0" * 32


def is_url(value: Any) -> bool:
    return isinstance(value, str) and value[:8].lower().startswith(("https://", "http://"))


async def with_fetched_inputs(
    request: web.Request, workflow: Workflow, params: Mapping[str, Any], user: str
) -> Mapping[str, Any]:
    """`params` with each image param that is a URL replaced by the id of its new upload."""
    urls = {name: params[name] for name in workflow.image_params() if is_url(params.get(name))}
    if not urls:
        return params
    # the other params first: a request that fails them fetches nothing
    workflow.resolve({**params, **dict.fromkeys(urls, _PLACEHOLDER)})
    settings = request.app[SETTINGS]
    images = {
        name: await fetch_image(url, param=name, settings=settings) for name, url in urls.items()
    }
    stored = {
        name: (await store_upload(request.app, user, image, source_url=urls[name])).id
        for name, image in images.items()
    }
    return {**params, **stored}


async def fetch_image(url: str, *, param: str, settings: Settings) -> CheckedImage:
    """The image at `url`, checked as an upload is; an ImageUrlError (or the upload check's
    error) naming `param` otherwise."""
    seconds = settings.url_input_timeout
    try:
        async with asyncio.timeout(seconds):
            data = await _download(url, param=param, settings=settings)
    except TimeoutError:
        _fail(ImageUrlUnreachable, param, url, f"it did not arrive within {seconds:g} s")
    try:
        return await check_upload(data, settings.upload_max_pixels)
    except UnsupportedImage as exc:
        _fail(ImageUrlNotAnImage, param, url, exc.message)
    except (CorruptImage, ImageTooLarge) as exc:
        raise type(exc)(
            f"{param}: {exc.message}", details=_details(param, url, exc.message)
        ) from None


async def _download(url: str, *, param: str, settings: Settings) -> bytes:
    current = url
    jar = aiohttp.DummyCookieJar()  # nothing one site sets is sent to another
    async with aiohttp.ClientSession(cookie_jar=jar) as session:
        for _ in range(MAX_REDIRECTS + 1):
            target, addresses = await _checked(current, param=param, settings=settings)
            response = await _open(session, target, addresses, param=param, original=url)
            try:
                if response.status in _REDIRECTS:
                    location = response.headers.get("Location")
                    if not location:
                        _fail(ImageUrlUnreachable, param, url, "a redirect without a Location")
                    current = str(target.join(URL(location)))
                    continue
                if response.status != 200:
                    _fail(ImageUrlUnreachable, param, url, f"it answered HTTP {response.status}")
                return await _read_capped(response, settings.upload_max_bytes, param, url)
            finally:
                response.release()
    _fail(ImageUrlUnreachable, param, url, f"more than {MAX_REDIRECTS} redirects")


async def _checked(url: str, *, param: str, settings: Settings) -> tuple[URL, list[IPAddress]]:
    """The URL and the addresses it may be fetched from (the webhook guard, in our words)."""
    schemes = ("https://", "http://") if settings.url_inputs_allow_http else ("https://",)
    if not url[:8].lower().startswith(schemes):
        allowed = " or ".join(s.rstrip("/") + "//" for s in schemes)
        _fail(ImageUrlInvalid, param, url, f"only {allowed} URLs may be fetched")
    try:
        return await checked(url, allow_private=settings.url_inputs_allow_private)
    except WebhookUrlInvalid as exc:
        # the guard words its reasons for webhooks ("webhook_url must …"): say "the URL"
        _fail(ImageUrlInvalid, param, url, exc.message.replace("webhook_url", "the URL"))
    except WebhookUrlUnresolvable:
        _fail(ImageUrlUnreachable, param, url, f"its host {URL(url).host!r} does not resolve")
    except WebhookUrlRefused as exc:
        reason = exc.details["reason"] if isinstance(exc.details, dict) else "not public"
        address = exc.details["address"] if isinstance(exc.details, dict) else "?"
        _fail(ImageUrlRefused, param, url, f"it leads to {address}, {reason}")


async def _open(
    session: aiohttp.ClientSession,
    target: URL,
    addresses: list[IPAddress],
    *,
    param: str,
    original: str,
) -> aiohttp.ClientResponse:
    """GET `target` from one of the addresses checked, the first that takes the connection."""
    host = target.raw_host or ""
    pinned = str(addresses[0]) != host  # a name: connect to the addresses checked
    headers = {"Accept": "image/png, image/jpeg, image/webp", "User-Agent": "formy-async"}
    if pinned:
        headers["Host"] = target.host_port_subcomponent or host
    tls_name = host if pinned and target.scheme == "https" else None
    problem = "it could not be reached"
    for ip in addresses:
        try:
            return await session.get(
                target.with_host(str(ip)) if pinned else target,
                headers=headers,
                allow_redirects=False,
                server_hostname=tls_name,
            )
        except aiohttp.ClientConnectorError as exc:  # nothing sent: try the next address
            problem = f"it could not be reached: {exc.os_error or exc}"
        except aiohttp.ClientError as exc:
            problem = f"it could not be fetched: {exc}"
            break
    _fail(ImageUrlUnreachable, param, original, problem)


async def _read_capped(response: aiohttp.ClientResponse, cap: int, param: str, url: str) -> bytes:
    too_large = f"it is over the limit of {cap} bytes"
    if response.content_length is not None and response.content_length > cap:
        _fail(ImageUrlTooLarge, param, url, too_large)
    data = bytearray()
    try:
        while chunk := await response.content.read(_CHUNK):
            data += chunk
            if len(data) > cap:
                _fail(ImageUrlTooLarge, param, url, too_large)
    except aiohttp.ClientError as exc:
        _fail(ImageUrlUnreachable, param, url, f"the download broke off: {exc}")
    if not data:
        _fail(ImageUrlNotAnImage, param, url, "it is empty")
    return bytes(data)


def _details(param: str, url: str, reason: str) -> dict[str, str]:
    shown = url if len(url) <= 200 else url[:200] + "…"
    return {"param": param, "url": shown, "reason": reason}


def _fail(cls: type[ImageUrlError], param: str, url: str, reason: str) -> NoReturn:
    raise cls(
        f"{param}: the image URL cannot be used: {reason}", details=_details(param, url, reason)
    )
