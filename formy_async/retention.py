"""Retention: a scheduled arq job that removes old uploads, outputs and job index entries."""

from __future__ import annotations

import time
from typing import Any

import structlog

from . import keys
from .jobs import WorkerContext
from .models import FINAL_STATUSES
from .storage import INPUTS, OUTPUTS

log = structlog.get_logger()


async def clean_up(ctx: dict[str, Any]) -> dict[str, int]:
    """Remove what is past its time: uploads (FORMY_INPUTS_TTL), outputs (FORMY_OUTPUTS_TTL),
    and listing entries of expired jobs (their records expire by themselves after FORMY_JOB_TTL).
    """
    wc: WorkerContext = ctx["formy"]
    settings, now = wc.settings, time.time()
    removed = {
        "inputs": await wc.storage.delete_older_than(INPUTS, now - settings.inputs_ttl),
        "outputs": await wc.storage.delete_older_than(OUTPUTS, now - settings.outputs_ttl),
        "index": await wc.store.redis.zremrangebyscore(
            keys.jobs_index(), "-inf", now - settings.job_ttl
        ),
    }
    for status in FINAL_STATUSES:  # stats look back one day at most
        await wc.store.redis.zremrangebyscore(keys.finished(status), "-inf", now - 86400)
    log.info("retention_done", **removed)
    return removed
