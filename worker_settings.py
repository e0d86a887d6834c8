"""The worker entry point: `arq worker_settings.WorkerSettings` (the Procfile's `worker`)."""

from __future__ import annotations

from formy_async.settings import Settings
from formy_async.worker import worker_options

WorkerSettings = type("WorkerSettings", (), worker_options(Settings()))
