"""What each ComfyUI backend has loaded, and what a model switch and a run cost there.

ComfyUI keeps the outputs of the last prompt's nodes (its default cache), so a backend is warm
for the models its last prompt's loader nodes named: a job naming the same ones starts without
loading anything. Every worker process shares this through Redis: `ran` when a prompt is
queued, `measured` when its loaders' time and its execution time are known, `forget` when the
backend restarted (it no longer knows that last prompt). Between a prompt that names other
models and the measure of its load, the backend is switching (see `Warm.switching`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from . import keys
from .scripts import Script

#: weight of the newest measurement in the moving averages
SMOOTHING = 0.3
#: seconds a backend's record is kept after its last prompt
TTL = 7 * 24 * 3600

#: Lua: `ran(...)` records the models the backend holds after its newest prompt (and that
#: prompt, if given); when they are not the ones it held, when the switch to them began. Also
#: part of the slot's script (store.slots), which records a job's models with its slot.
RAN_LUA = """
local function ran(warm_key, models, prompt_id, now, ttl)
  if redis.call('HGET', warm_key, 'models') ~= models then
    redis.call('HSET', warm_key, 'switched', now)
  end
  redis.call('HSET', warm_key, 'models', models)
  if prompt_id ~= '' then redis.call('HSET', warm_key, 'prompt', prompt_id) end
  redis.call('EXPIRE', warm_key, ttl)
end
"""
_RAN = RAN_LUA + "ran(warm_key, models, prompt_id, now, ttl)\n"

# Folds the seconds measured (either may be '') into the backend's moving averages; a load
# measured ends the switch.
_MEASURED = """
local function fold(field, new)
  if new == '' then return end
  new = tonumber(new)
  local old = tonumber(redis.call('HGET', warm_key, field))
  if old then new = old + tonumber(smoothing) * (new - old) end
  redis.call('HSET', warm_key, field, string.format('%.17g', new))
end
fold('switch', switch)
fold('run', run)
if switch ~= '' then redis.call('HDEL', warm_key, 'switched') end
"""


@dataclass(frozen=True)
class Warm:
    """One backend's record: its loaded models, its last prompt, its measured costs."""

    models: frozenset[str] = frozenset()
    prompt: str | None = None
    switch: float | None = None  # seconds a model load took there
    run: float | None = None  # seconds a prompt's execution took there
    switched: float | None = None  # Unix time a prompt naming other models went there

    def holds(self, models: frozenset[str]) -> bool:
        return bool(models) and models <= self.models

    def switching(self, now: float) -> bool:
        """Whether the backend is still loading the models it holds (or running the prompt
        that loads them): from its switch until that load was measured, or, should no measure
        come, for about twice a switch and a run."""
        if self.switched is None:
            return False
        return now < self.switched + 2 * ((self.switch or 0.0) + (self.run or 0.0))


class Warmth:
    """The backends' warm models and costs, as every worker process sees them."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._ran = Script(redis, ("warm_key",), ("models", "prompt_id", "now", "ttl"), _RAN)
        self._measured = Script(redis, ("warm_key",), ("switch", "run", "smoothing"), _MEASURED)

    async def of(self, urls: Sequence[str]) -> list[Warm]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for url in urls:
                pipe.hgetall(keys.backend_warm(url))
            return [_parse(raw) for raw in await pipe.execute()]

    async def ran(self, url: str, models: frozenset[str], prompt_id: str | None) -> None:
        """A prompt naming `models` goes to the backend (`prompt_id` once it is queued): after
        it, those are loaded."""
        await self._ran(
            {"warm_key": keys.backend_warm(url)},
            {
                "models": models_field(models),
                "prompt_id": prompt_id or "",
                "now": repr(time.time()),
                "ttl": TTL,
            },
        )

    async def measured(self, url: str, *, switch: float | None, run: float | None) -> None:
        """Fold a model load's and an execution's seconds into the backend's averages; a load
        measured ends the switch. One script: a read and a write would be two round trips."""
        if switch is None and run is None:
            return
        await self._measured(
            {"warm_key": keys.backend_warm(url)},
            {
                "switch": "" if switch is None else repr(switch),
                "run": "" if run is None else repr(run),
                "smoothing": repr(SMOOTHING),
            },
        )

    async def forget(self, url: str) -> None:
        """The backend lost what it had loaded (it restarted): cold, costs kept."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hdel(keys.backend_warm(url), "models", "prompt", "switched")
            await pipe.execute()


def models_field(models: frozenset[str]) -> str:
    """How a set of models is stored in a backend's record."""
    return json.dumps(sorted(models))


def _parse(raw: dict[bytes | str, bytes | str]) -> Warm:
    fields = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in raw.items()
    }
    models = json.loads(fields["models"]) if "models" in fields else []
    return Warm(
        models=frozenset(str(m) for m in models),
        prompt=fields.get("prompt"),
        switch=float(fields["switch"]) if "switch" in fields else None,
        run=float(fields["run"]) if "run" in fields else None,
        switched=float(fields["switched"]) if "switched" in fields else None,
    )
