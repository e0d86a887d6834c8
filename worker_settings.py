"""The worker entry point: `arq worker_settings.WorkerSettings` (what `formy-async worker` runs,
without its supervisor); arq takes the keyword arguments of its Worker as a mapping too."""

from __future__ import annotations

from formy_async.settings import Settings
from formy_async.worker.settings import worker_kwargs

WorkerSettings = worker_kwargs(Settings())
