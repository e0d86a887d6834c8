"""The worker entry point: `arq worker_settings.WorkerSettings` (what `formy-async worker` runs,
without its supervisor); arq takes the keyword arguments of its Worker as a mapping too."""

from __future__ import annotations

from formy_async.settings import Settings
from formy_async.start_problems import startup_problem
from formy_async.worker.settings import worker_kwargs

try:
    WorkerSettings = worker_kwargs(Settings())
except ValueError as exc:  # a bad setting, no real SECRET_KEY, a broken workflow file: one line
    raise SystemExit(f"formy-async worker: {startup_problem(exc)}") from None
