"""Storage: the shared behaviour of the local and S3 backends, and a whole stack on S3 alone."""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from aiobotocore.session import get_session  # type: ignore[import-untyped]
from moto.server import ThreadedMotoServer
from PIL import Image

from formy_async import storage as storage_module
from formy_async.embedded import running_stack
from formy_async.errors import FileNotFound, NotFound, StorageUnavailable
from formy_async.settings import Settings
from formy_async.storage import LocalStorage, S3Storage, Storage, storage_from_settings

from .conftest import free_port, stack_settings
from .helpers import api_session, follow, submit

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

CREDENTIALS = {"aws_access_key_id": "test", "aws_secret_access_key": "test"}
HOUR = 3600


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    """An S3 emulator on a free local port, for the whole module."""
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
async def s3(moto_url: str) -> AsyncIterator[S3Client]:
    """A plain S3 client on the emulator, to look behind the storage's back."""
    creator = get_session().create_client(
        "s3", region_name="us-east-1", endpoint_url=moto_url, **CREDENTIALS
    )
    async with creator as client:
        yield client


@pytest.fixture
async def bucket(s3: S3Client) -> str:
    """A new, empty bucket of the test's own."""
    name = f"formy-{uuid.uuid4().hex[:12]}"
    await s3.create_bucket(Bucket=name)
    return name


def _s3_storage(moto_url: str, bucket: str, prefix: str = "") -> S3Storage:
    return S3Storage(
        bucket,
        prefix=prefix,
        endpoint_url=moto_url,
        access_key_id="test",
        secret_access_key="test",
    )


@pytest.fixture
async def local_storage(tmp_path: Path) -> AsyncIterator[Storage]:
    store = LocalStorage(tmp_path)
    yield store
    await store.aclose()


@pytest.fixture
async def s3_storage(moto_url: str, bucket: str) -> AsyncIterator[Storage]:
    store = _s3_storage(moto_url, bucket, prefix="formy/")
    yield store
    await store.aclose()


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest) -> Storage:
    """Each backend in turn; the S3 one on the emulator, under a key prefix."""
    store: Storage = request.getfixturevalue(f"{request.param}_storage")
    return store


async def test_put_then_read_returns_the_same_bytes(storage: Storage) -> None:
    data = bytes(range(256)) * 40
    size = await storage.put("outputs/job1/image.png", data, "image/png")
    assert size == len(data)
    assert await storage.read("outputs/job1/image.png") == data


async def test_size_is_the_number_of_bytes_stored(storage: Storage) -> None:
    await storage.put("outputs/job1/clip.mp4", b"x" * 1234, "video/mp4")
    assert await storage.size("outputs/job1/clip.mp4") == 1234


async def test_read_range_returns_the_bytes_from_start_to_stop(storage: Storage) -> None:
    data = bytes(range(256)) * 4
    await storage.put("outputs/job1/clip.mp4", data, "video/mp4")
    assert await storage.read_range("outputs/job1/clip.mp4", 10, 20) == data[10:20]
    assert await storage.read_range("outputs/job1/clip.mp4", 1000, 5000) == data[1000:]


async def test_size_of_a_missing_key_raises_file_not_found(storage: Storage) -> None:
    with pytest.raises(FileNotFound):
        await storage.size("outputs/job1/none.mp4")


async def test_reading_a_missing_key_raises_file_not_found(storage: Storage) -> None:
    with pytest.raises(NotFound) as caught:
        await storage.read("outputs/job1/absent.png")
    assert caught.value.code == "file_not_found"


async def test_deleting_a_key_twice_is_not_an_error(storage: Storage) -> None:
    await storage.put("inputs/upload1", b"x", "application/octet-stream")
    await storage.delete("inputs/upload1")
    await storage.delete("inputs/upload1")
    with pytest.raises(NotFound):
        await storage.read("inputs/upload1")


async def test_delete_older_than_removes_only_keys_under_the_prefix(storage: Storage) -> None:
    await storage.put("outputs/job1/a.png", b"a", "image/png")
    await storage.put("outputs/job2/b.png", b"b", "image/png")
    await storage.put("inputs/upload1", b"c", "image/png")
    removed = await storage.delete_older_than("outputs", time.time() + HOUR)
    assert removed == 2
    for key in ("outputs/job1/a.png", "outputs/job2/b.png"):
        with pytest.raises(NotFound):
            await storage.read(key)
    assert await storage.read("inputs/upload1") == b"c"


async def test_delete_older_than_keeps_keys_stored_after_the_cutoff(storage: Storage) -> None:
    await storage.put("outputs/job1/a.png", b"a", "image/png")
    removed = await storage.delete_older_than("outputs", time.time() - HOUR)
    assert removed == 0
    assert await storage.read("outputs/job1/a.png") == b"a"


@pytest.mark.parametrize("key", ["../secret", "/etc/passwd", "outputs//a", "outputs/.env", ""])
async def test_unsafe_keys_are_refused(storage: Storage, key: str) -> None:
    with pytest.raises(ValueError, match="unsafe storage key"):
        await storage.put(key, b"x", "text/plain")


async def test_s3_objects_are_stored_under_the_prefix_with_their_content_type(
    moto_url: str, bucket: str, s3: S3Client
) -> None:
    storage = _s3_storage(moto_url, bucket, prefix="/tenant/")
    await storage.put("outputs/job1/image.png", b"png", "image/png")
    await storage.aclose()
    head = await s3.head_object(Bucket=bucket, Key="tenant/outputs/job1/image.png")
    assert head["ContentType"] == "image/png"


async def test_delete_older_than_deletes_in_batches(
    moto_url: str, bucket: str, s3: S3Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage_module, "DELETE_BATCH", 2)
    for i in range(5):
        await s3.put_object(Bucket=bucket, Key=f"inputs/upload{i}", Body=b"")
    storage = _s3_storage(moto_url, bucket)
    removed = await storage.delete_older_than("inputs", time.time() + HOUR)
    await storage.aclose()
    listing = await s3.list_objects_v2(Bucket=bucket)
    assert (removed, listing["KeyCount"]) == (5, 0)


async def test_a_missing_bucket_raises_storage_unavailable(moto_url: str) -> None:
    storage = _s3_storage(moto_url, "no-such-bucket")
    with pytest.raises(StorageUnavailable) as caught:
        await storage.put("inputs/upload1", b"x", "image/png")
    await storage.aclose()
    assert caught.value.http_status == 503


async def test_an_unreachable_endpoint_raises_storage_unavailable() -> None:
    storage = _s3_storage(f"http://127.0.0.1:{free_port()}", "bucket")
    with pytest.raises(StorageUnavailable):
        await storage.read("inputs/upload1")
    await storage.aclose()


def test_s3_backend_without_a_bucket_names_the_variable_to_set() -> None:
    settings = Settings(storage_backend="s3", s3_bucket="")
    with pytest.raises(ValueError, match="FORMY_S3_BUCKET"):
        storage_from_settings(settings)


def test_s3_backend_builds_s3_storage_that_does_not_show_its_secret() -> None:
    settings = Settings(storage_backend="s3", s3_bucket="b", s3_secret_access_key="hunter2")
    storage = storage_from_settings(settings)
    assert isinstance(storage, S3Storage)
    assert storage.local_path("outputs/job1/a.png") is None
    assert "hunter2" not in repr(storage)


@pytest.mark.redis
async def test_web_and_worker_share_no_disk_with_s3_storage(
    redis_url: str, simulator_url: str, moto_url: str, bucket: str, s3: S3Client, tmp_path: Path
) -> None:
    local_dir = tmp_path / "storage"
    settings = stack_settings(
        redis_url,
        simulator_url,
        local_dir,
        storage_backend="s3",
        s3_bucket=bucket,
        s3_endpoint_url=moto_url,
        s3_access_key_id="test",
        s3_secret_access_key="test",
    )
    async with running_stack(settings) as stack, api_session() as session:
        job = await submit(session, stack.url, prompt="a fox", steps=2, width=64, height=64)
        events = await follow(session, stack.url, job["id"])
        assert events[-1]["type"] == "done"
        async with session.get(stack.url + events[-1]["outputs"][0]["url"]) as r:
            assert r.status == 200
            data = await r.read()
        async with session.get(
            stack.url + events[-1]["outputs"][0]["url"], headers={"Range": "bytes=0-99"}
        ) as r:
            assert r.status == 206
            assert r.headers["Content-Range"] == f"bytes 0-99/{len(data)}"
            assert await r.read() == data[:100]
    image = Image.open(io.BytesIO(data))
    assert (image.format, image.size) == ("PNG", (64, 64))
    listing = await s3.list_objects_v2(Bucket=bucket, Prefix=f"outputs/{job['id']}/")
    assert listing["KeyCount"] == 1
    assert not local_dir.exists() or not any(local_dir.iterdir())
