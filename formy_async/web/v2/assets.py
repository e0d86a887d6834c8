"""v2 assets: content-addressed uploads (blake3), dedup by hash, their bytes with `Range`.

An asset is a record of one user (kept FORMY_INPUTS_TTL) over bytes stored once under their
hash, whoever uploaded them. The retention sweep removes bytes by age, so every new record
refreshes the age of its bytes first: they outlive it. Dedup is told per user: `created_new`,
`HEAD by-hash` and `from-hash` never reveal what another user has stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from typing import Any

from aiohttp import web
from pydantic import BaseModel, Field, ValidationError

from ...errors import (
    AssetNotFound,
    BadRequest,
    BlobNotFound,
    Conflict,
    FileNotFound,
    Forbidden,
    HashMismatch,
    IdempotencyKeyInvalid,
    IdempotencyKeyReuse,
    InvalidBody,
    JobNotFound,
)
from ...models import Asset, Job, OutputFile
from ...storage import Storage, asset_key, output_key
from ...store.assets import KeyedUpload
from ..bodies import body_deadline, read_json
from ..context import ASSETS, SETTINGS, STORAGE
from ..errors import validation_summary
from ..idempotency import HEADER, MAX_KEY_LENGTH, REPLAYED
from ..outputs import serve_stored
from ..security import caller, may_see, owned_job, signer
from .forms import FILE_PATH_MAX, checked_hash, read_form
from .views import json_answer
from .wire import (
    PREFIX,
    V2Asset,
    content_path,
    iso,
    origin_of,
    output_asset_id,
    parse_output_asset_id,
)

routes = web.RouteTableDef()

#: a record closer than this to its end does not count for dedup: the sweep may be removing
#: its bytes right now (it lists, then deletes), so they are uploaded again instead
_DEDUP_MARGIN = 60.0


class _FromHash(BaseModel):
    """Body of `POST /api/v2/assets/from-hash`; `tags` are taken and not kept."""

    hash: str
    file_path: str | None = Field(None, min_length=1, max_length=FILE_PATH_MAX)
    tags: list[str] | None = None


def _idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get(HEADER)
    if key is not None and not 1 <= len(key) <= MAX_KEY_LENGTH:
        raise IdempotencyKeyInvalid(f"{HEADER} must be 1 to {MAX_KEY_LENGTH} characters long")
    return key


# -- bytes and records --------------------------------------------------------------------


async def refresh_blob(
    request: web.Request, hex_digest: str, data: bytes | None, content_type: str
) -> None:
    """Make the bytes of `hex_digest` count as stored now (the sweep goes by age), writing
    `data` when they are not there; without `data`, missing bytes are BlobNotFound.

    On this machine's disk that is a touch: an upload of bytes already kept skips the write.
    Object storage has no touch: the bytes are put again (read first when not at hand).
    """
    storage, key = request.app[STORAGE], asset_key(hex_digest)
    if await _touch(storage, key):
        return
    if data is None:
        with contextlib.suppress(FileNotFound):
            data = await storage.read(key)
    if data is None:
        raise BlobNotFound(f"the bytes {hex_digest} are no longer stored: upload them again")
    async with request.app[ASSETS].writing(hex_digest):
        if not await _touch(storage, key):  # another upload of them may have written them
            await storage.put(key, data, content_type)


async def _touch(storage: Storage, key: str) -> bool:
    """Set the stored file's age to now, when it is a file on this machine's disk that exists."""
    path = storage.local_path(key)
    if path is None:
        return False
    try:
        await asyncio.to_thread(os.utime, path)
    except FileNotFoundError:
        return False
    return True


async def _live(request: web.Request, user: str, digest: str) -> Asset | None:
    """`user`'s asset with these bytes, unless it is about to expire (see _DEDUP_MARGIN)."""
    asset = await request.app[ASSETS].by_hash(user, digest)
    margin = min(_DEDUP_MARGIN, request.app[SETTINGS].inputs_ttl / 10)
    return asset if asset is not None and asset.expires_at - time.time() > margin else None


async def _new_life(
    request: web.Request, digest: str, content_type: str, data: bytes | None = None
) -> dict[str, Any]:
    """A new record's id and times, its bytes refreshed (or written: `data`) first. Its life
    counts from before the refresh: the bytes, at least as young, outlive it."""
    since = time.time()
    await refresh_blob(request, digest.removeprefix("blake3:"), data, content_type)
    ttl = request.app[SETTINGS].inputs_ttl
    return {"id": str(uuid.uuid4()), "created_at": since, "expires_at": since + ttl}


async def _own_asset(request: web.Request, asset_id: str) -> Asset:
    """The uploaded asset, if the caller may see it; another user's is as unknown as none."""
    asset = await request.app[ASSETS].get(asset_id)
    if asset is None or not may_see(request, asset.user):
        raise AssetNotFound(f"no asset with id {asset_id!r} (it may have expired)")
    return asset


async def _own_output(request: web.Request, job_id: str, filename: str) -> tuple[Job, OutputFile]:
    """The job output an `out_…` asset id names, if the caller may see its job."""
    try:
        job = await owned_job(request, job_id)
    except JobNotFound:
        job = None
    output = next((o for o in job.outputs if o.filename == filename), None) if job else None
    if job is None or output is None:
        raise AssetNotFound(f"no asset with id {output_asset_id(job_id, filename)!r}")
    return job, output


# -- answers ------------------------------------------------------------------------------


def _signed_url(request: web.Request, asset_id: str) -> tuple[str, str]:
    """The absolute signed content URL, and when it stops working."""
    ttl = request.app[SETTINGS].signed_url_ttl
    url = origin_of(request) + signer(request.app)(content_path(asset_id))
    return url, iso(time.time() + ttl) or ""


def _view(request: web.Request, asset: Asset, *, created_new: bool | None) -> V2Asset:
    url, url_expires_at = _signed_url(request, asset.id)
    return V2Asset(
        id=asset.id,
        hash=asset.hash,
        size_bytes=asset.size,
        content_type=asset.content_type,
        file_path=asset.file_path,
        created_new=created_new,
        created_at=iso(asset.created_at) or "",
        url=url,
        url_expires_at=url_expires_at,
        expires_at=iso(asset.expires_at),
    )


def _output_view(request: web.Request, asset_id: str, job: Job, output: OutputFile) -> V2Asset:
    """A job's output as an asset: kept while its job is, and its file (FORMY_OUTPUTS_TTL)."""
    settings = request.app[SETTINGS]
    made = job.started_at or job.created_at
    url, url_expires_at = _signed_url(request, asset_id)
    return V2Asset(
        id=asset_id,
        hash=None,
        size_bytes=output.size,
        content_type=output.content_type,
        file_path=output.filename,
        created_at=iso(job.finished_at or made) or "",
        url=url,
        url_expires_at=url_expires_at,
        expires_at=iso(min(job.created_at + settings.job_ttl, made + settings.outputs_ttl)),
        job_id=job.id,
    )


def _created(
    request: web.Request, asset: Asset, *, created_new: bool, replayed: bool = False
) -> web.Response:
    headers = {"Location": f"{PREFIX}/assets/{asset.id}"}
    if replayed:
        headers[REPLAYED] = "true"
    return json_answer(_view(request, asset, created_new=created_new), status=201, headers=headers)


async def _replay(request: web.Request, claim: KeyedUpload, digest: str) -> web.Response | None:
    """The answer to an upload whose Idempotency-Key made an asset already; None when that
    asset is gone (deleted or expired): the upload is made anew."""
    if claim.hash != digest:
        raise IdempotencyKeyReuse(
            f"this {HEADER} was used for an upload of other bytes ({claim.hash}): send a new "
            "key for a new upload",
            details={"asset_id": claim.asset_id},
        )
    asset = await request.app[ASSETS].get(claim.asset_id)
    if asset is None:
        return None
    return _created(request, asset, created_new=claim.created_new, replayed=True)


async def _put_keyed(
    request: web.Request,
    asset: Asset,
    key: str,
    *,
    created_new: bool,
    earlier: KeyedUpload | None,
) -> web.Response:
    """Store the record as the one its Idempotency-Key made, unless a retry with the same key
    got there first: then that retry's asset is the answer (and this record is not kept)."""
    ttl = request.app[SETTINGS].idempotency_ttl
    winner = await request.app[ASSETS].put_keyed(
        asset, key, created_new=created_new, key_ttl=ttl, replacing=earlier
    )
    if winner is None:
        return _created(request, asset, created_new=created_new)
    answer = await _replay(request, winner, asset.hash)
    if answer is None:
        raise Conflict(f"the upload with this {HEADER} was deleted as this one ran: try again")
    return answer


# -- routes -------------------------------------------------------------------------------


@routes.post(PREFIX + "/assets")
async def upload_asset(request: web.Request) -> web.Response:
    """Store an upload's bytes under their blake3 (once) and a record of the caller over them."""
    user, key = caller(request).user, _idempotency_key(request)
    async with body_deadline(request):
        form = await read_form(request, request.app[SETTINGS].upload_max_bytes)
    if form.expected_hash is not None and form.expected_hash != form.hash:
        raise HashMismatch(
            f"the bytes received hash to {form.hash}, not the expected {form.expected_hash}",
            details={"expected_hash": form.expected_hash, "actual_hash": form.hash},
        )
    store = request.app[ASSETS]
    earlier = await store.keyed_upload(user, key) if key is not None else None
    if earlier is not None and (answer := await _replay(request, earlier, form.hash)):
        return answer
    created_new = await _live(request, user, form.hash) is None
    asset = Asset(
        user=user,
        hash=form.hash,
        size=len(form.data),
        content_type=form.content_type,
        file_path=form.file_path,
        **await _new_life(request, form.hash, form.content_type, form.data),
    )
    if key is None:
        await store.put(asset)
        return _created(request, asset, created_new=created_new)
    return await _put_keyed(request, asset, key, created_new=created_new, earlier=earlier)


@routes.head(PREFIX + "/assets/by-hash/{hash}")
async def asset_exists(request: web.Request) -> web.Response:
    """200 when the caller has a live asset of these bytes, else 404 (others' never count)."""
    digest = checked_hash(request.match_info["hash"], "the hash in the path", BadRequest)
    if await _live(request, caller(request).user, digest) is None:
        raise AssetNotFound(f"you have no asset with the bytes {digest}")
    return web.Response(status=200)


@routes.post(PREFIX + "/assets/from-hash")
async def asset_from_hash(request: web.Request) -> web.Response:
    """A new record of the caller over bytes the caller has already uploaded."""
    user = caller(request).user
    try:
        body = _FromHash.model_validate(await read_json(request))
    except ValidationError as exc:
        raise InvalidBody(
            'the body must be {"hash": "blake3:…", "file_path"?: …}: ' + validation_summary(exc)
        ) from None
    digest = checked_hash(body.hash, "hash")
    existing = await _live(request, user, digest)
    if existing is None:
        raise BlobNotFound(
            f"you have no asset with the bytes {digest}: upload them with POST {PREFIX}/assets",
            details={"hash": digest},
        )
    life = await _new_life(request, digest, existing.content_type)
    asset = existing.model_copy(update={**life, "file_path": body.file_path or existing.file_path})
    await request.app[ASSETS].put(asset)
    return _created(request, asset, created_new=False)


@routes.get(PREFIX + "/assets/{asset_id}")
async def get_asset(request: web.Request) -> web.Response:
    """The asset's record with a fresh signed URL; an `out_…` id is a job's output."""
    asset_id = request.match_info["asset_id"]
    output_of = parse_output_asset_id(asset_id)
    if output_of is not None:
        job, output = await _own_output(request, *output_of)
        return json_answer(_output_view(request, asset_id, job, output))
    return json_answer(_view(request, await _own_asset(request, asset_id), created_new=None))


@routes.delete(PREFIX + "/assets/{asset_id}")
async def delete_asset(request: web.Request) -> web.Response:
    """Forget the record; its bytes go with the sweep once no record keeps them young."""
    asset_id = request.match_info["asset_id"]
    output_of = parse_output_asset_id(asset_id)
    if output_of is not None:
        await _own_output(request, *output_of)  # another user's is unknown, not forbidden
        raise Forbidden(
            "a job's output is not deleted on its own: it is kept as long as its job is"
        )
    asset = await _own_asset(request, asset_id)
    await request.app[ASSETS].delete(asset)
    return web.Response(status=204)


@routes.get(PREFIX + "/assets/{asset_id}/content")
async def get_asset_content(request: web.Request) -> web.StreamResponse:
    """The asset's bytes, whole or the `Range` asked for; a token or a signed URL reads them."""
    asset_id = request.match_info["asset_id"]
    gone = AssetNotFound(f"the bytes of asset {asset_id!r} have passed their retention time")
    output_of = parse_output_asset_id(asset_id)
    if output_of is not None:
        job, output = await _own_output(request, *output_of)
        key, content_type = output_key(job.files_of, output.filename), output.content_type
    else:
        asset = await _own_asset(request, asset_id)
        key, content_type = asset_key(asset.hex), asset.content_type
    cache = "private, max-age=3600"
    return await serve_stored(
        request, key, content_type=content_type, cache_control=cache, gone=gone
    )
