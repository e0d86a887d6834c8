"""Retention: a scheduled arq job that removes old uploads, outputs and job index entries."""

from __future__ import annotations

import time
from typing import Any

import structlog

from ..storage import INPUTS, OUTPUTS
from .context import WorkerContext

log = structlog.get_logger()


async def clean_up(ctx: dict[str, Any]) -> dict[str, int]:
    """Remove what is past its time: uploads (FORMY_INPUTS_TTL), outputs (FORMY_OUTPUTS_TTL),
    and listing entries of expired jobs (their records expire by themselves after FORMY_JOB_TTL).
    """
    wc = WorkerContext.of(ctx)
    settings, now = wc.settings, time.time()
    removed = {
        "inputs": await wc.storage.delete_older_than(INPUTS, now - settings.inputs_ttl),
        "outputs": await wc.storage.delete_older_than(OUTPUTS, now - settings.outputs_ttl),
        # stats look back one day at most
        "index": await wc.store.forget_before(now - settings.job_ttl, now - 86400),
    }
    log.info("retention_done", **removed)
    return removed
