"""Webhook signatures: what the service signs, and what a receiver's `verify` accepts."""

from __future__ import annotations

from formy_async.client.webhooks import sign, signed_headers, verify

SECRET = "webhook-test-secret-0123456789abcdef"


def test_sign_is_hmac_sha256_over_timestamp_dot_body() -> None:
    import hashlib
    import hmac

    expected = hmac.new(b"k", b"1700000000.{}", hashlib.sha256).hexdigest()
    assert sign(b"{}", "k", 1700000000) == expected


def test_verify_accepts_what_sign_made_and_nothing_else() -> None:
    body, now = b'{"id": "j1", "status": "done"}', 1_700_000_000
    headers = signed_headers(body, SECRET, now)
    stamp, signature = headers["X-Formy-Timestamp"], headers["X-Formy-Signature"]
    assert signature.startswith("sha256=")
    assert verify(body, SECRET, stamp, signature, now=now)
    assert verify(body, SECRET, int(stamp), signature.removeprefix("sha256="), now=now + 299)
    assert not verify(body + b" ", SECRET, stamp, signature, now=now)  # body changed
    assert not verify(body.replace(b"done", b"fail"), SECRET, stamp, signature, now=now)
    assert not verify(body, "other-secret", stamp, signature, now=now)
    assert not verify(body, SECRET, str(now + 1), signature, now=now)  # timestamp changed
    assert not verify(body, SECRET, stamp, signature, now=now + 301)  # too old: a replay
    assert not verify(body, SECRET, stamp, signature, now=now - 301)  # from the future
    assert not verify(body, SECRET, "yesterday", signature, now=now)
    assert not verify(body, SECRET, stamp, "sha256=" + "0" * 64, now=now)
    assert not verify(body, SECRET, stamp, "", now=now)
