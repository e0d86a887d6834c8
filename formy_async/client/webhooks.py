"""Webhook signatures: how the service signs a webhook request, and how a receiver checks one.

The body is the job as its owner sees it (`JobView`). Each request carries `X-Formy-Timestamp`
(Unix seconds) and `X-Formy-Signature: sha256=<hex>`: the HMAC-SHA256 of
`f"{timestamp}.".encode() + body` keyed with the webhook secret. A receiver checks both, and
refuses stale timestamps (replays); this module needs nothing but the standard library:

    from formy_async.client.webhooks import verify

    async def receive(request: web.Request) -> web.Response:
        body, h = await request.read(), request.headers
        ok = verify(body, SECRET, h["X-Formy-Timestamp"], h["X-Formy-Signature"])
        return web.Response(status=204 if ok else 401)
"""

from __future__ import annotations

import hashlib
import hmac
import time

USER_AGENT = "formy-async-webhook"


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
