"""Webhook URLs: which a job may be submitted with, and the addresses a delivery may reach.

A URL is checked at submission and again before each delivery (DNS may have changed): http(s),
no credentials, and every address its host resolves to public; loopback, private, link-local
(cloud metadata), carrier-grade NAT, multicast, reserved and unspecified ones are refused unless
`FORMY_WEBHOOK_ALLOW_PRIVATE` is set. A delivery goes to the very addresses checked (no second
lookup to rebind).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket

from yarl import URL

from .errors import WebhookUrlInvalid, WebhookUrlRefused, WebhookUrlUnresolvable

MAX_URL_LENGTH = 2000
RESOLVE_TIMEOUT = 5.0

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}


def _invalid(why: str) -> WebhookUrlInvalid:
    return WebhookUrlInvalid(f"webhook_url {why}")


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
    unresolvable = WebhookUrlUnresolvable(f"webhook_url's host {host!r} does not resolve")
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


async def checked(url: str, *, allow_private: bool) -> tuple[URL, list[IPAddress]]:
    """The URL and the addresses a request to it may go to; raises what `check_webhook_url` does."""
    parsed = _parse(url)
    host, port = parsed.raw_host or "", parsed.port or 0
    addresses = await _resolve(host, port)
    if not allow_private:
        for ip in addresses:
            if reason := refusal(ip):
                where = f"{host} resolves to {ip}" if str(ip) != host else str(ip)
                raise WebhookUrlRefused(
                    f"webhook_url is refused: {where}, {reason}",
                    details={"address": str(ip), "reason": reason},
                )
    return parsed, addresses


async def check_webhook_url(url: str, *, allow_private: bool) -> str:
    """Check a submitted `webhook_url`; return it normalized, or raise `WebhookUrlInvalid` (its
    form), `WebhookUrlUnresolvable` (DNS gives nothing within a few seconds) or
    `WebhookUrlRefused` (an address is not public).
    """
    parsed, _ = await checked(url, allow_private=allow_private)
    return str(parsed)
