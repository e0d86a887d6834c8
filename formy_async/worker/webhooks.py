"""Webhook delivery: an arq function that POSTs a finished job to its `webhook_url`.

Redirects are not followed; anything but a 2xx is tried again after 1, 2, 4, 8… s, up to
`FORMY_WEBHOOK_MAX_ATTEMPTS` tries.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp
import structlog
from arq import Retry
from yarl import URL

from ..client.webhooks import signed_headers
from ..errors import JobNotFound, WebhookUrlInvalid, WebhookUrlRefused, WebhookUrlUnresolvable
from ..models import JobView
from ..webhook_urls import IPAddress, checked
from .context import WorkerContext

log = structlog.get_logger()

DELIVERY_TIMEOUT = 10.0
MAX_BACKOFF = 600.0


async def _post(
    session: aiohttp.ClientSession | None, url: str, body: bytes, secret: str, allow_private: bool
) -> int:
    """POST `body` to the addresses `url` was checked against (with `session`, or a new one)."""
    parsed, addresses = await checked(url, allow_private=allow_private)
    host = parsed.raw_host or ""
    headers = signed_headers(body, secret)
    pinned = str(addresses[0]) != host  # a name: connect to the addresses checked, no new lookup
    if pinned:
        headers["Host"] = parsed.host_port_subcomponent or host
    tls_name = host if pinned and parsed.scheme == "https" else None

    async def post(client: aiohttp.ClientSession, to: IPAddress) -> int:
        async with client.post(
            parsed.with_host(str(to)) if pinned else parsed,
            data=body,
            headers=headers,
            allow_redirects=False,
            server_hostname=tls_name,
        ) as response:
            return response.status

    async with contextlib.AsyncExitStack() as stack, asyncio.timeout(DELIVERY_TIMEOUT):
        if session is None:
            session = await stack.enter_async_context(aiohttp.ClientSession())
        for ip in addresses[:-1]:
            with contextlib.suppress(aiohttp.ClientConnectorError):  # nothing sent: next one
                return await post(session, ip)
        return await post(session, addresses[-1])


async def deliver_webhook(ctx: dict[str, Any], job_id: str) -> str:
    """arq entry point: POST the job to its `webhook_url`; raise `Retry` until the last try.

    Returns `delivered`, `failed` (every try used), `refused` (the URL no longer passes the
    check), or `skipped` (no webhook, or the job is gone).
    """
    wc = WorkerContext.of(ctx)
    settings = wc.settings
    attempt = int(ctx.get("job_try") or 1)
    max_attempts = settings.webhook_max_attempts
    allow_private = settings.webhook_allow_private
    # never SECRET_KEY: a receiver holding it could mint tokens
    secret = settings.webhook_secret
    bound = log.bind(job_id=job_id, attempt=attempt, max_attempts=max_attempts)
    try:
        job = await wc.store.get(job_id)
    except JobNotFound:
        bound.warning("webhook_failed", error="the job no longer exists")
        return "skipped"
    if not job.webhook_url:
        return "skipped"
    with contextlib.suppress(ValueError):  # the host only: a URL's path may hold a token
        bound = bound.bind(host=URL(job.webhook_url).host)
    body = JobView.of(job).model_dump_json().encode()
    try:
        status = await _post(wc.http, job.webhook_url, body, secret, allow_private)
    except (WebhookUrlInvalid, WebhookUrlRefused) as exc:  # trying again won't help
        bound.warning("webhook_failed", error=exc.message, code=exc.code)
        return "refused"
    except WebhookUrlUnresolvable as exc:
        error = exc.message
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    else:
        if 200 <= status < 300:
            bound.info("webhook_delivered", status=status)
            return "delivered"
        error = f"HTTP {status}"
    if attempt >= max_attempts:
        bound.warning("webhook_failed", error=error)
        return "failed"
    delay = min(2.0 ** (attempt - 1), MAX_BACKOFF)
    bound.info("webhook_retry", error=error, retry_in=delay)
    raise Retry(defer=delay)
