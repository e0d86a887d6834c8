"""The v2 asset routes over HTTP: uploads by blake3, dedup per user, content, signed URLs."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from blake3 import blake3
from comfy_sdk import AsyncComfy, NotFound
from multidict import CIMultiDictProxy

from formy_async.auth import mint_token
from formy_async.embedded import Stack
from formy_async.worker.retention import clean_up
from tests.conftest import TEST_SECRET, TOKEN, StackFactory
from tests.helpers import api_session, follow, get_json, submit

BOB_TOKEN = mint_token(TEST_SECRET, "bob", ttl=3600)
DATA = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8


def blake3_of(data: bytes) -> str:
    return "blake3:" + blake3(data).hexdigest()


async def upload(
    http: aiohttp.ClientSession,
    base: str,
    data: bytes = DATA,
    *,
    expected_hash: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    form = aiohttp.FormData()
    form.add_field("content_type", "image/png")
    form.add_field("file_path", "photo.png")
    if expected_hash is not None:
        form.add_field("expected_hash", expected_hash)
    form.add_field("file", data, filename="photo.png", content_type="image/png")
    async with http.post(f"{base}/api/v2/assets", data=form, headers=headers or {}) as r:
        return r.status, await r.json()


async def uploaded(http: aiohttp.ClientSession, base: str, data: bytes = DATA) -> dict[str, Any]:
    status, body = await upload(http, base, data)
    assert status == 201, body
    return body


async def exists(http: aiohttp.ClientSession, base: str, digest: str) -> int:
    async with http.head(f"{base}/api/v2/assets/by-hash/{digest}") as r:
        return r.status


async def from_hash(
    http: aiohttp.ClientSession, base: str, digest: str
) -> tuple[int, dict[str, Any]]:
    body = {"hash": digest, "file_path": "again.png"}
    async with http.post(f"{base}/api/v2/assets/from-hash", json=body) as r:
        return r.status, await r.json()


async def content(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> tuple[int, bytes, CIMultiDictProxy[str]]:
    async with http.get(url, headers=headers or {}) as r:
        return r.status, await r.read(), r.headers


async def test_an_uploaded_asset_is_read_back_by_id_with_the_same_bytes(stack: Stack) -> None:
    async with api_session() as http:
        asset = await uploaded(http, stack.url)
        status, got = await get_json(http, f"{stack.url}/api/v2/assets/{asset['id']}")
        status_bytes, data, headers = await content(
            http, f"{stack.url}/api/v2/assets/{asset['id']}/content"
        )
    assert (asset["hash"], asset["size_bytes"], asset["created_new"]) == (
        blake3_of(DATA),
        len(DATA),
        True,
    )
    assert status == 200
    assert {k: got[k] for k in ("id", "hash", "content_type", "file_path")} == {
        "id": asset["id"],
        "hash": blake3_of(DATA),
        "content_type": "image/png",
        "file_path": "photo.png",
    }
    assert got["url"].startswith(stack.url + f"/api/v2/assets/{asset['id']}/content?")
    assert (status_bytes, data, headers["Content-Type"]) == (200, DATA, "image/png")


async def test_a_range_of_an_assets_content_answers_206_with_those_bytes(stack: Stack) -> None:
    async with api_session() as http:
        asset = await uploaded(http, stack.url)
        url = f"{stack.url}/api/v2/assets/{asset['id']}/content"
        status, data, headers = await content(http, url, {"Range": "bytes=10-19"})
    assert (status, data) == (206, DATA[10:20])
    assert headers["Content-Range"] == f"bytes 10-19/{len(DATA)}"
    assert headers["Accept-Ranges"] == "bytes"


async def test_an_upload_whose_expected_hash_differs_is_refused_with_hash_mismatch(
    stack: Stack,
) -> None:
    wrong = blake3_of(b"other bytes")
    async with api_session() as http:
        status, body = await upload(http, stack.url, expected_hash=wrong)
        unknown = await exists(http, stack.url, blake3_of(DATA))
    assert status == 409
    assert body["error"]["code"] == "hash_mismatch"
    assert body["error"]["details"]["actual_hash"] == blake3_of(DATA)
    assert unknown == 404  # nothing was kept


async def test_head_by_hash_is_404_before_an_upload_and_200_after(stack: Stack) -> None:
    async with api_session() as http:
        before = await exists(http, stack.url, blake3_of(DATA))
        await uploaded(http, stack.url)
        after = await exists(http, stack.url, blake3_of(DATA))
    assert (before, after) == (404, 200)


async def test_from_hash_mints_a_second_record_of_the_same_bytes(stack: Stack) -> None:
    async with api_session() as http:
        first = await uploaded(http, stack.url)
        status, second = await from_hash(http, stack.url, first["hash"])
        _, data, _ = await content(http, second["url"])
    assert status == 201
    assert second["id"] != first["id"]
    assert (second["hash"], second["created_new"], second["file_path"]) == (
        first["hash"],
        False,
        "again.png",
    )
    assert second["expires_at"] >= first["expires_at"]  # re-referencing never shortens
    assert data == DATA


async def test_another_users_bytes_are_unknown_to_head_and_from_hash(stack: Stack) -> None:
    async with api_session() as alice, api_session(BOB_TOKEN) as bob:
        await uploaded(alice, stack.url)
        head = await exists(bob, stack.url, blake3_of(DATA))
        status, body = await from_hash(bob, stack.url, blake3_of(DATA))
    assert head == 404
    assert (status, body["error"]["code"]) == (404, "blob_not_found")


async def test_an_upload_of_bytes_another_user_has_is_new_to_its_uploader(stack: Stack) -> None:
    async with api_session() as alice, api_session(BOB_TOKEN) as bob:
        await uploaded(alice, stack.url)
        theirs = await uploaded(bob, stack.url)
        mine_again = await uploaded(bob, stack.url)
    assert (theirs["created_new"], mine_again["created_new"]) == (True, False)


async def test_another_users_asset_is_not_found(stack: Stack) -> None:
    async with api_session() as alice, api_session(BOB_TOKEN) as bob:
        asset = await uploaded(alice, stack.url)
        status, data, _ = await content(bob, f"{stack.url}/api/v2/assets/{asset['id']}/content")
        record_status, _ = await get_json(bob, f"{stack.url}/api/v2/assets/{asset['id']}")
    assert (status, record_status) == (404, 404)
    assert DATA not in data


async def test_a_deleted_asset_is_not_found(stack: Stack) -> None:
    async with api_session() as http:
        asset = await uploaded(http, stack.url)
        url = f"{stack.url}/api/v2/assets/{asset['id']}"
        async with http.delete(url) as r:
            deleted = r.status
        status, body = await get_json(http, url)
        again = await exists(http, stack.url, asset["hash"])
    assert deleted == 204
    assert (status, body["error"]["code"]) == (404, "not_found")
    assert again == 404


async def test_a_signed_url_reads_the_content_without_a_token_and_a_forged_one_is_refused(
    stack: Stack,
) -> None:
    async with api_session() as http:
        asset = await uploaded(http, stack.url)
    forged = asset["url"].rsplit("sig=", 1)[0] + "sig=" + "0" * 64
    async with aiohttp.ClientSession() as anonymous:
        status, data, _ = await content(anonymous, asset["url"])
        async with anonymous.get(forged) as r:
            refused, body = r.status, await r.json()
    assert (status, data) == (200, DATA)
    assert (refused, body["error"]["code"]) == (401, "unauthorized")


async def test_an_upload_without_a_file_part_is_400_invalid_request_with_a_message(
    stack: Stack,
) -> None:
    form = aiohttp.FormData()
    form.add_field("content_type", "image/png")
    form.add_field("file_path", "photo.png")
    async with (
        api_session() as http,
        http.post(f"{stack.url}/api/v2/assets", data=form) as r,
    ):
        status, body = r.status, await r.json()
    assert (status, body["error"]["code"]) == (400, "invalid_request")
    assert "`file`" in body["error"]["message"]


async def test_a_malformed_hash_or_body_is_400_invalid_request(stack: Stack) -> None:
    async with api_session() as http:
        head = await exists(http, stack.url, "sha256:" + "0" * 64)
        short, short_body = await from_hash(http, stack.url, "blake3:abc")
        async with http.post(
            f"{stack.url}/api/v2/assets/from-hash",
            data=b"{not json",
            headers={"Content-Type": "application/json"},
        ) as r:
            broken, broken_body = r.status, await r.json()
    assert head == 400
    assert (short, short_body["error"]["code"]) == (400, "invalid_request")
    assert "blake3:<64 hex digits>" in short_body["error"]["message"]
    assert (broken, broken_body["error"]["code"]) == (400, "invalid_request")


async def test_an_upload_over_the_size_limit_is_refused(make_stack: StackFactory) -> None:
    async with make_stack(upload_max_bytes=1000) as stack, api_session() as http:
        status, body = await upload(http, stack.url, DATA)
    assert (status, body["error"]["code"]) == (413, "upload_too_large")


async def test_a_retried_upload_with_its_idempotency_key_answers_the_first_asset(
    stack: Stack,
) -> None:
    key = {"Idempotency-Key": "upload-1"}
    async with api_session() as http:
        tries = await asyncio.gather(*(upload(http, stack.url, headers=key) for _ in range(3)))
        later = await upload(http, stack.url, headers=key)
    assert [status for status, _ in [*tries, later]] == [201] * 4
    assert len({body["id"] for _, body in [*tries, later]}) == 1
    assert {body["created_new"] for _, body in [*tries, later]} == {True}


async def test_an_idempotency_key_sent_again_with_other_bytes_is_refused(stack: Stack) -> None:
    key = {"Idempotency-Key": "upload-2"}
    async with api_session() as http:
        await upload(http, stack.url, headers=key)
        status, body = await upload(http, stack.url, b"other bytes", headers=key)
    assert (status, body["error"]["code"]) == (422, "idempotency_key_reuse")


async def test_a_jobs_output_is_an_asset_with_its_job_and_bytes(stack: Stack) -> None:
    async with api_session() as http:
        job = await submit(http, stack.url, prompt="a fox", steps=2, width=64, height=64)
        (output,) = (await follow(http, stack.url, job["id"]))[-1]["outputs"]
        asset_id = f"out_{job['id']}_{output['filename']}"
        status, asset = await get_json(http, f"{stack.url}/api/v2/assets/{asset_id}")
        _, data, _ = await content(http, asset["url"])
        _, original, _ = await content(http, stack.url + output["url"])
        async with http.delete(f"{stack.url}/api/v2/assets/{asset_id}") as r:
            refused = r.status
    assert status == 200
    assert (asset["job_id"], asset["size_bytes"]) == (job["id"], output["size"])
    assert data == original and len(data) == output["size"]
    assert refused == 403


async def test_retention_keeps_bytes_a_newer_record_names_and_then_removes_them(
    make_stack: StackFactory,
) -> None:
    async with make_stack(inputs_ttl=2) as stack, api_session() as http:
        first = await uploaded(http, stack.url)
        await asyncio.sleep(1.0)
        _, second = await from_hash(http, stack.url, first["hash"])  # the bytes are young again
        await asyncio.sleep(1.2)  # the first record has expired
        kept = await clean_up(stack.worker.ctx)
        status, data, _ = await content(http, second["url"])
        await asyncio.sleep(1.0)  # and so has the second
        removed = await clean_up(stack.worker.ctx)
    assert (kept["assets"], status, data) == (0, 200, DATA)
    assert removed["assets"] == 1


async def test_the_official_sdk_commits_assets_deduplicated_by_hash(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMFY_BASE_URL", stack.url)
    async with AsyncComfy(api_key=TOKEN) as client:
        first = client.assets.from_bytes(DATA, filename="x.png", content_type="image/png")
        await first.commit()
        second = client.assets.from_bytes(DATA, filename="x.png", content_type="image/png")
        await second.commit()
        assert first.id is not None and second.id is not None
        again = await client.assets.get(first.id)
        download = await again.get_download_url()
        await client.assets.delete(second.id)
        with pytest.raises(NotFound):
            await client.assets.get(second.id)
    assert (first.created_new, second.created_new) == (True, False)
    assert first.id != second.id
    assert first.hash == second.hash == again.hash == blake3_of(DATA)
    assert again.expires_at is not None
    assert download.url.startswith(f"{stack.url}/api/v2/assets/{first.id}/content")
