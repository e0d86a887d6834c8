"""Webhooks: a job's final state POSTed as JSON to the `webhook_url` it was submitted with.

The body is the job (`JobView`). Each request carries `X-Formy-Timestamp` (Unix seconds) and
`X-Formy-Signature: sha256=<hex>`: the HMAC-SHA256 of `f"{timestamp}.".encode() + body` keyed
with the webhook secret. A receiver checks both, and refuses stale timestamps (replays):

    from formy_async.webhooks import verify

    async def receive(request: web.Request) -> web.Response:
        body, h = await request.read(), request.headers
        ok = verify(body, SECRET, h["X-Formy-Timestamp"], h["X-Formy-Signature"])
        return web.Response(status=204 if ok else 401)

A URL is checked at submission and again before each delivery (DNS may have changed): http(s),
no credentials, and every address its host resolves to public; loopback, private, link-local
(cloud metadata), carrier-grade NAT, multicast, reserved and unspecified ones are refused unless
`FORMY_WEBHOOK_ALLOW_PRIVATE` is set. The request goes to the very addresses checked (no second
lookup to rebind). Redirects are not followed; anything but a 2xx is tried again after 1, 2, 4,
8… s, up to `FORMY_WEBHOOK_MAX_ATTEMPTS` tries.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import socket
import time
from typing import Any

import aiohttp
import structlog
from arq import ArqRedis, Retry
from yarl import URL

from .errors import InvalidParams, NotFound
from .keys import DELIVER_WEBHOOK
from .models import Job, JobView

log = structlog.get_logger()

USER_AGENT = "formy-async-webhook"
MAX_URL_LENGTH = 2000
RESOLVE_TIMEOUT = 5.0
DELIVERY_TIMEOUT = 10.0
MAX_BACKOFF = 600.0

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}


# --- the URL check --------------------------------------------------------------------------


def _invalid(why: str) -> InvalidParams:
    return InvalidParams(f"webhook_url {why}", code="webhook_url_invalid")


def _parse(url: str) -> URL:
    """The URL without its fragment, if its form is acceptable (nothing is resolved here)."""
    if len(url) > MAX_URL_LENGTH:
        raise _invalid(f"is longer than {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        raise _invalid("contains whitespace or control characters")
    try:
        parsed = URL(url)
        port = parsed.port
    except (ValueError, TypeError) as exc:
        raise _invalid("is not a valid URL") from exc
    if parsed.scheme not in ("http", "https"):
        raise _invalid("must be an http:// or https:// URL")
    if not parsed.raw_host or port is None:
        raise _invalid("has no host")
    if parsed.raw_user is not None or parsed.raw_password is not None:
        raise _invalid("must not contain credentials")
    parsed = parsed.with_fragment(None)
    if len(str(parsed)) > MAX_URL_LENGTH:
        raise _invalid(f"is longer than {MAX_URL_LENGTH} characters once encoded")
    return parsed


def refusal(ip: IPAddress) -> str | None:
    """Why webhooks may not go to `ip` (e.g. "a loopback address"), or None when it is public."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            inner = refusal(embedded)
            return f"{inner} embedded in an IPv6 address" if inner else None
    if ip in _METADATA:
        return "a cloud metadata address"
    checks = (
        ("an unspecified address", ip.is_unspecified),
        ("a loopback address", ip.is_loopback),
        ("a link-local address", ip.is_link_local),
        ("a multicast address", ip.is_multicast),
        ("a carrier-grade NAT address", ip in _CGNAT),
        ("a reserved address", ip.is_reserved),
        ("a private address", ip.is_private),
        ("a non-public address", not ip.is_global),
    )
    return next((reason for reason, hit in checks if hit), None)


async def _resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` stands for; an IP literal is taken as it is, without a lookup."""
    with contextlib.suppress(ValueError):
        return [ipaddress.ip_address(host)]
    unresolvable = InvalidParams(
        f"webhook_url's host {host!r} does not resolve", code="webhook_url_unresolvable"
    )
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError, UnicodeError) as exc:  # socket.gaierror is an OSError
        raise unresolvable from exc
    found: list[IPAddress] = []
    for family, _type, _proto, _name, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            if ip not in found:
                found.append(ip)
    if not found:
        raise unresolvable
    return found


async def _checked(url: str, *, allow_private: bool) -> tuple[URL, list[IPAddress]]:
    parsed = _parse(url)
    host, port = parsed.raw_host or "", parsed.port or 0
    addresses = await _resolve(host, port)
    if not allow_private:
        for ip in addresses:
            if reason := refusal(ip):
                where = f"{host} resolves to {ip}" if str(ip) != host else str(ip)
                raise InvalidParams(
                    f"webhook_url is refused: {where}, {reason}",
                    code="webhook_url_refused",
                    details={"address": str(ip), "reason": reason},
                )
    return parsed, addresses


async def check_webhook_url(url: str, *, allow_private: bool) -> str:
    """Check a submitted `webhook_url`; return it normalized, or raise `InvalidParams`.

    Codes: `webhook_url_invalid` (its form), `webhook_url_unresolvable` (DNS gives nothing
    within a few seconds), `webhook_url_refused` (an address is not public).
    """
    parsed, _ = await _checked(url, allow_private=allow_private)
    return str(parsed)


# --- signatures -----------------------------------------------------------------------------


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """The hex HMAC-SHA256 of `f"{timestamp}.".encode() + body` keyed with `secret`."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return mac.hexdigest()


def verify(
    body: bytes,
    secret: str,
    timestamp: str | int,
    signature: str,
    *,
    tolerance: float = 300,
    now: float | None = None,
) -> bool:
    """True when `signature` (`sha256=<hex>` or the bare hex) signs `body` at `timestamp` with
    `secret`, and `timestamp` is within `tolerance` seconds of `now` (default: the clock)."""
    try:
        stamp = int(timestamp)
    except (TypeError, ValueError):
        return False
    if abs((time.time() if now is None else now) - stamp) > tolerance:
        return False
    given = signature.strip().removeprefix("sha256=").lower()
    return hmac.compare_digest(given.encode(), sign(body, secret, stamp).encode())


def signed_headers(body: bytes, secret: str, timestamp: int | None = None) -> dict[str, str]:
    stamp = int(time.time()) if timestamp is None else timestamp
    return {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Formy-Timestamp": str(stamp),
        "X-Formy-Signature": f"sha256={sign(body, secret, stamp)}",
    }


# --- delivery (an arq function) -------------------------------------------------------------


async def _post(
    session: aiohttp.ClientSession | None, url: str, body: bytes, secret: str, allow_private: bool
) -> int:
    """POST `body` to the addresses `url` was checked against (with `session`, or a new one)."""
    parsed, addresses = await _checked(url, allow_private=allow_private)
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


async def enqueue_webhook(arq: ArqRedis, job: Job) -> bool:
    """Queue the delivery of a final job's webhook; True when queued (at most once per job)."""
    if not job.webhook_url or not job.is_final:
        return False
    queued = await arq.enqueue_job(DELIVER_WEBHOOK, job.id, _job_id=f"{DELIVER_WEBHOOK}:{job.id}")
    return queued is not None


async def deliver_webhook(ctx: dict[str, Any], job_id: str) -> str:
    """arq entry point: POST the job to its `webhook_url`; raise `Retry` until the last try.

    Returns `delivered`, `failed` (every try used), `refused` (the URL no longer passes the
    check), or `skipped` (no webhook, or the job is gone).
    """
    wc = ctx["formy"]
    settings = wc.settings
    attempt = int(ctx.get("job_try") or 1)
    max_attempts = settings.webhook_max_attempts
    allow_private = settings.webhook_allow_private
    # never SECRET_KEY: a receiver holding it could mint tokens
    secret = settings.webhook_secret
    bound = log.bind(job_id=job_id, attempt=attempt, max_attempts=max_attempts)
    try:
        job = await wc.store.get(job_id)
    except NotFound:
        bound.warning("webhook_failed", error="the job no longer exists")
        return "skipped"
    if not job.webhook_url:
        return "skipped"
    with contextlib.suppress(ValueError):  # the host only: a URL's path may hold a token
        bound = bound.bind(host=URL(job.webhook_url).host)
    body = JobView.of(job).model_dump_json().encode()
    session = ctx.get("http")
    try:
        status = await _post(session, job.webhook_url, body, secret, allow_private)
    except InvalidParams as exc:
        if exc.code != "webhook_url_unresolvable":  # refused or invalid: trying again won't help
            bound.warning("webhook_failed", error=exc.message, code=exc.code)
            return "refused"
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
