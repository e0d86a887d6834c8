"""Retention: a scheduled arq job removing old uploads, asset bytes, outputs, job index entries."""

from __future__ import annotations

import time
from typing import Any

import structlog

from ..storage import ASSETS, INPUTS, OUTPUTS
from .context import WorkerContext

log = structlog.get_logger()


async def clean_up(ctx: dict[str, Any]) -> dict[str, int]:
    """Remove what is past its time: uploads and asset bytes (FORMY_INPUTS_TTL), outputs
    (FORMY_OUTPUTS_TTL), and listing entries of expired jobs (their records expire by themselves
    after FORMY_JOB_TTL).

    Asset bytes are shared by every record of them; each new record refreshes their age (see
    web/v2/assets), so bytes this old are past the expiry of every record that names them.
    """
    wc = WorkerContext.of(ctx)
    settings, now = wc.settings, time.time()
    removed = {
        "inputs": await wc.storage.delete_older_than(INPUTS, now - settings.inputs_ttl),
        "assets": await wc.storage.delete_older_than(ASSETS, now - settings.inputs_ttl),
        "outputs": await wc.storage.delete_older_than(OUTPUTS, now - settings.outputs_ttl),
        # stats look back one day at most
        "index": await wc.store.forget_before(now - settings.job_ttl, now - 86400),
    }
    log.info("retention_done", **removed)
    return removed
