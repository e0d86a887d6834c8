"""Webhook URLs: which a job may be submitted with (the checks against SSRF)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from formy_async import webhook_urls
from formy_async.errors import InvalidParams
from formy_async.webhook_urls import check_webhook_url


def fake_resolver(monkeypatch: pytest.MonkeyPatch, table: dict[str, list[str]]) -> list[str]:
    """Make the running loop resolve names from `table` (others: unknown); returns the lookups."""
    lookups: list[str] = []

    async def getaddrinfo(host: str, port: Any, **_: Any) -> list[Any]:
        lookups.append(host)
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        family = {False: socket.AF_INET, True: socket.AF_INET6}
        return [(family[":" in ip], socket.SOCK_STREAM, 6, "", (ip, port)) for ip in table[host]]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", getaddrinfo)
    return lookups


async def refused(url: str, code: str = "webhook_url_refused") -> str:
    with pytest.raises(InvalidParams) as caught:
        await check_webhook_url(url, allow_private=False)
    assert caught.value.code == code, caught.value.message
    return caught.value.message


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("10.0.0.1", "private"),
        ("192.168.1.1", "private"),
        ("172.16.0.1", "private"),
        ("169.254.169.254", "metadata"),
        ("169.254.1.1", "link-local"),
        ("[::1]", "loopback"),
        ("[fe80::1]", "link-local"),
        ("[fc00::1]", "private"),
        ("100.64.0.1", "carrier-grade NAT"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("[::ffff:127.0.0.1]", "loopback"),
        ("[::ffff:169.254.169.254]", "metadata"),
        ("[2002:a00:1::]", "private"),  # 6to4 around 10.0.0.1
        ("[64:ff9b::a9fe:a9fe]", "metadata"),  # NAT64 around 169.254.169.254
    ],
)
async def test_non_public_addresses_are_refused(
    host: str, reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups = fake_resolver(monkeypatch, {})
    message = await refused(f"http://{host}:8080/hook")
    assert reason in message
    assert lookups == []  # literals are judged as they are


async def test_localhost_is_refused_by_what_it_resolves_to() -> None:
    message = await refused("http://localhost/hook")  # resolved locally, no network needed
    assert "localhost resolves to" in message
    assert "loopback" in message


async def test_a_name_is_refused_when_any_of_its_addresses_is_private(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_resolver(
        monkeypatch,
        {
            "internal.example": ["10.1.2.3"],
            "metadata.example": ["169.254.169.254"],
            "mixed.example": ["93.184.216.34", "192.168.0.7"],
            "v6.example": ["2606:2800:220:1::1", "::1"],
            "decimal.example": ["127.0.0.1"],
        },
    )
    assert "private" in await refused("https://internal.example/hook")
    assert "metadata" in await refused("https://metadata.example/hook")
    assert "192.168.0.7" in await refused("https://mixed.example/hook")
    assert "loopback" in await refused("https://v6.example/hook")
    assert "loopback" in await refused("http://decimal.example/")


async def test_a_public_name_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_resolver(monkeypatch, {"hooks.example.com": ["93.184.216.34", "2606:2800:220:1::1"]})
    url = "https://Hooks.Example.COM/formy?x=1#part"
    assert await check_webhook_url(url, allow_private=False) == (
        "https://hooks.example.com/formy?x=1"
    )


async def test_a_public_literal_is_accepted_without_resolving(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lookups = fake_resolver(monkeypatch, {})
    url = "http://93.184.216.34:8443/hook"
    assert await check_webhook_url(url, allow_private=False) == url
    assert lookups == []


async def test_unresolvable_hosts_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_resolver(monkeypatch, {"empty.example": []})
    await refused("https://nowhere.example/hook", "webhook_url_unresolvable")
    await refused("https://empty.example/hook", "webhook_url_unresolvable")


async def test_a_lookup_that_hangs_is_unresolvable(monkeypatch: pytest.MonkeyPatch) -> None:
    async def hang(*_: Any, **__: Any) -> list[Any]:
        await asyncio.sleep(30)
        return []

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", hang)
    monkeypatch.setattr(webhook_urls, "RESOLVE_TIMEOUT", 0.05)
    await refused("https://slow.example/hook", "webhook_url_unresolvable")


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://93.184.216.34/hook", "http"),
        ("file:///etc/passwd", "http"),
        ("javascript:alert(1)", "http"),
        ("gopher://93.184.216.34:6379/_PING", "http"),
        ("http://user:pass@93.184.216.34/hook", "credentials"),
        ("http://user@93.184.216.34/hook", "credentials"),
        ("http:///hook", "host"),
        ("/relative/hook", "http"),
        ("http://93.184.216.34:99999/", "not a valid URL"),
        ("http://93.184.216.34/a b", "whitespace"),
        ("http://93.184.216.34/\r\nX-Injected: 1", "whitespace"),
        ("http://93.184.216.34/" + "a" * 2000, "longer than 2000"),
    ],
)
async def test_malformed_urls_are_invalid(url: str, why: str) -> None:
    assert why in await refused(url, "webhook_url_invalid")


async def test_the_allowance_lets_private_addresses_through() -> None:
    for url in ("http://127.0.0.1:9000/hook", "http://localhost:9000/hook", "http://[::1]/"):
        assert await check_webhook_url(url, allow_private=True) == url


async def test_the_allowance_does_not_waive_the_other_checks() -> None:
    for url in ("ftp://127.0.0.1/", "http://u:p@127.0.0.1/"):
        with pytest.raises(InvalidParams):
            await check_webhook_url(url, allow_private=True)
