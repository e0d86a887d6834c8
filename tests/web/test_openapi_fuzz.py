"""Schemathesis fuzzes the API from its OpenAPI description: no 5xx, no answer it contradicts.

Bounded: a few hundred cases over every operation, against a whole stack (web, worker and the
ComfyUI simulator on an in-process fake Redis) run in a thread of its own, since schemathesis
calls the server synchronously.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from formy_async.embedded import running_stack
from formy_async.settings import Settings
from formy_async.simulator import SimulatorConfig, run_simulator
from formy_async.web.openapi import openapi_document
from formy_async.workflows import Catalogue

from ..conftest import ROOT, TEST_SECRET, TOKEN, free_port

#: examples per operation: about 20 operations, so a few hundred cases in all
EXAMPLES = 15

#: a body the schema accepts may still name an upload or a model that does not exist (422), a
#: job that does not (404), or be a file that is no PNG, JPEG or WEBP (415) or too large (413):
#: the API's answers to those are checked against the description, not expected to be 2xx
CONFIG = schemathesis.Config.from_dict(
    {
        "checks": {
            "positive_data_acceptance": {
                "expected-statuses": [
                    *("2xx", "401", "403", "404", "409", "410", "413", "415", "422", "429")
                ]
            }
        }
    }
)
schema = schemathesis.openapi.from_dict(
    openapi_document(Catalogue.load(ROOT / "workflows")), config=CONFIG
)


class ThreadedStack:
    """The embedded stack serving from a thread with its own event loop, until stopped."""

    def __init__(self, storage: Path) -> None:
        self.storage = storage
        self.port = free_port()
        self.ready = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop: asyncio.Event | None = None
        self.thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    async def _serve(self) -> None:
        self.loop, self.stop = asyncio.get_running_loop(), asyncio.Event()
        async with run_simulator(SimulatorConfig(step_delay=0)) as comfy:
            values = {
                "comfyui_url": comfy,
                "host": "127.0.0.1",
                "port": self.port,
                "storage_dir": self.storage,
                "workflows_dir": ROOT / "workflows",
                "secret_key": TEST_SECRET,
                "max_concurrent_tasks_per_user": 100000,
                "submissions_per_minute": 1000000,
            }
            async with running_stack(Settings(**values)):  # type: ignore[arg-type]
                self.ready.set()
                await self.stop.wait()

    def __enter__(self) -> str:
        self.thread.start()
        assert self.ready.wait(30), "the stack did not start"
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        if self.loop is not None and self.stop is not None:
            self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(30)


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with contextlib.ExitStack() as stack:
        for name in ("REDIS_URL", "FORMY_REDIS_URL"):  # the embedded fake Redis
            stack.enter_context(_unset(name))
        yield stack.enter_context(ThreadedStack(tmp_path_factory.mktemp("fuzz")))


@contextlib.contextmanager
def _unset(name: str) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(name, raising=False)
        yield


@schema.exclude(path="/ws").parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_the_api_answers_as_its_description_says(case: schemathesis.Case, base_url: str) -> None:
    # an upload's form may carry other fields: they are ignored, by design, not refused
    lenient = case.operation.path == "/api/uploads"
    case.call_and_validate(
        base_url=base_url,
        headers={"Authorization": f"Bearer {TOKEN}"},
        excluded_checks=[schemathesis.checks.negative_data_rejection] if lenient else [],
        timeout=30,
    )
