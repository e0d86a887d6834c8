"""One job's event appends, written in the order they were made, those queued together at once.

An append is taken when it is made (its job and event as they are then) and written behind the
job's earlier ones by one task per job, which sends everything queued meanwhile in one round
trip: a job's last output and its done event, say, or whatever a caller makes while an earlier
write is on its way. Once a write fails, the ones queued behind it fail too, so that the log
never holds a later event without an earlier one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from .scripts import Script


@dataclass
class Append:
    """One script call, with what makes its reply the caller's answer."""

    script: Script
    args: list[Any]  # EVALSHA's arguments after the sha (see Script.flat)
    settle: Callable[[Any], int]  # the reply → the seq (or raises)
    answer: asyncio.Future[int] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class JobAppends:
    """The appends of one job on their way to Redis."""

    def __init__(self, redis: Redis, idle: Callable[[], None]) -> None:
        self.redis = redis
        self._idle = idle  # called once nothing is queued or on its way
        self._queued: list[Append] = []
        self._task: asyncio.Task[None] | None = None

    def push(self, append: Append) -> asyncio.Future[int]:
        self._queued.append(append)
        if self._task is None:
            self._task = asyncio.create_task(self._write(), name="job-appends")
        return append.answer

    async def _write(self) -> None:
        try:
            while self._queued:
                batch, self._queued = self._queued, []
                try:
                    replies = await self._send(batch)
                except BaseException as exc:  # the whole batch, and what queued behind it
                    for append in (*batch, *self._queued):
                        _fail(append, exc)
                    self._queued = []
                    if not isinstance(exc, Exception):
                        raise
                    return
                for append, reply in zip(batch, replies, strict=True):
                    _answer(append, reply)
        finally:
            self._task = None
            self._idle()

    async def _send(self, batch: list[Append]) -> list[Any]:
        answers = await self._evalsha(batch)
        lost = next((i for i, a in enumerate(answers) if isinstance(a, NoScriptError)), None)
        if lost is None:
            return answers
        # Redis restarted and forgot its scripts: none from there on ran
        for script in {id(a.script): a.script for a in batch[lost:]}.values():
            await script.load()
        return answers[:lost] + await self._evalsha(batch[lost:])

    async def _evalsha(self, batch: list[Append]) -> list[Any]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for append in batch:
                pipe.execute_command("EVALSHA", append.script.sha, *append.args)
            return list(await pipe.execute(raise_on_error=False))


def _answer(append: Append, reply: Any) -> None:
    if append.answer.done():  # its caller stopped waiting
        return
    if isinstance(reply, Exception):
        append.answer.set_exception(reply)
        return
    try:
        append.answer.set_result(append.settle(reply))
    except Exception as exc:
        append.answer.set_exception(exc)


def _fail(append: Append, exc: BaseException) -> None:
    if append.answer.done():
        return
    if isinstance(exc, Exception):
        append.answer.set_exception(exc)
    else:
        append.answer.cancel()
