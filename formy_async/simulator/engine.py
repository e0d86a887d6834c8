"""The single prompt worker: execution order, classic caching, interrupts, events and history."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import sys
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from .hub import Hub
from .nodes import Env, Interrupted, JsonDict, NodeDef, NodeResult, format_value
from .progress import NodeRuntime, ProgressState
from .prompt_queue import PromptQueue, QueueItem
from .validation import type_name

log = structlog.get_logger()

SENSITIVE_EXTRA_DATA_KEYS = ("auth_token_comfy_org", "api_key_comfy_org")


def is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2


@dataclass
class CacheEntry:
    outputs: tuple[Any, ...]
    ui: JsonDict | None


class NodeFailed(Exception):
    """Ends a prompt: a node raised (error) or saw the interrupt flag (interrupted)."""

    def __init__(self, event: str, data: JsonDict) -> None:
        super().__init__(event)
        self.event = event
        self.data = data


@dataclass
class PromptRun:
    """Everything one prompt execution accumulates."""

    item: QueueItem
    client_id: str | None
    state: ProgressState
    signatures: dict[str, str]
    results: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    ui: dict[str, JsonDict] = field(default_factory=dict)
    executed: list[str] = field(default_factory=list)
    messages: list[list[Any]] = field(default_factory=list)

    @property
    def prompt_id(self) -> str:
        return self.item.prompt_id

    @property
    def prompt(self) -> JsonDict:
        return self.item.prompt


class Engine:
    """Runs queued prompts one at a time in a background task it owns."""

    def __init__(
        self, env: Env, registry: Mapping[str, NodeDef], hub: Hub, queue: PromptQueue
    ) -> None:
        self.env = env
        self.registry = registry
        self.hub = hub
        self.queue = queue
        self.interrupt_requested = False
        self.cache: dict[str, CacheEntry] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._work_forever(), name="simulator_worker")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def interrupt(self) -> None:
        self.interrupt_requested = True

    def check_interrupt(self) -> None:
        if self.interrupt_requested:
            self.interrupt_requested = False
            raise Interrupted("Processing interrupted")

    def free(self, unload_models: bool, free_memory: bool) -> None:
        if unload_models or free_memory:
            self.cache.clear()
            self.env.memory.clear()

    async def _work_forever(self) -> None:
        while True:
            item = await self.queue.get()
            try:
                await self.execute(item)
            except Exception:
                log.exception("simulator_prompt_crashed", prompt_id=item.prompt_id)
                if self.queue.running is item:
                    self.queue.task_done(item, _history_entry(item, {}, {}, False, []))

    async def execute(self, item: QueueItem) -> None:
        client_id = item.extra_data.get("client_id")
        self.hub.client_id = client_id if isinstance(client_id, str) else None
        self.interrupt_requested = False
        log.info("prompt_started", prompt_id=item.prompt_id)
        signatures = await asyncio.to_thread(self._signatures, item.prompt)
        state = ProgressState(item.prompt_id, self._emit_any)
        run = PromptRun(item, self.hub.client_id, state, signatures)
        self._add_message(run, "execution_start", {"prompt_id": run.prompt_id}, False)
        self._drop_unused(signatures)
        cached = [nid for nid in item.prompt if self._cached(run, nid) is not None]
        self._add_message(
            run, "execution_cached", {"nodes": cached, "prompt_id": run.prompt_id}, False
        )
        success = await self._run_outputs(run)
        self.hub.last_node_id = None
        outputs = self._history_outputs(run)
        meta = {nid: _meta(nid) for nid in outputs}
        self.queue.task_done(item, _history_entry(item, outputs, meta, success, run.messages))
        if run.client_id is not None:
            self.hub.send("executing", {"node": None, "prompt_id": run.prompt_id}, run.client_id)
        log.info("prompt_finished", prompt_id=run.prompt_id, success=success)

    async def _run_outputs(self, run: PromptRun) -> bool:
        try:
            for output_id in run.item.outputs_to_execute:
                await self._ensure(run, output_id, staged=True)
        except NodeFailed as failure:
            broadcast = failure.event == "execution_interrupted"
            self._add_message(run, failure.event, failure.data, broadcast)
            return False
        self._add_message(run, "execution_success", {"prompt_id": run.prompt_id}, False)
        return True

    def _history_outputs(self, run: PromptRun) -> dict[str, JsonDict]:
        """What this run showed; 0.3.64 adds every other node of the prompt whose UI it still
        has cached (e.g. an output left out by partial_execution_targets)."""
        outputs = dict(run.ui)
        if self.env.config.profile.history_keeps_every_cached_ui:
            for node_id in run.prompt:
                entry = self._cached(run, node_id)
                if node_id not in outputs and entry is not None and entry.ui is not None:
                    outputs[node_id] = entry.ui
        return outputs

    def _emit_any(self, event: str, data: JsonDict) -> None:
        """Events that go to the target, or to everyone when the prompt has no client_id."""
        self.hub.send(event, data, self.hub.client_id)

    def _add_message(self, run: PromptRun, event: str, data: JsonDict, broadcast: bool) -> None:
        data = {**data, "timestamp": int(time.time() * 1000)}
        run.messages.append([event, data])
        if run.client_id is not None or broadcast:
            self.hub.send(event, data, run.client_id)

    def _cached(self, run: PromptRun, node_id: str) -> CacheEntry | None:
        if not self.env.config.cache:
            return None
        return self.cache.get(run.signatures.get(node_id, ""))

    def _drop_unused(self, signatures: dict[str, str]) -> None:
        keep = set(signatures.values())
        for key in [k for k in self.cache if k not in keep]:
            del self.cache[key]

    def _signatures(self, prompt: JsonDict) -> dict[str, str]:
        memo: dict[str, str] = {}
        for node_id in prompt:
            self._signature(prompt, node_id, memo, set())
        return memo

    def _signature(
        self, prompt: JsonDict, node_id: Any, memo: dict[str, str], seen: set[Any]
    ) -> str:
        if node_id in memo:
            return memo[node_id]
        node = prompt.get(node_id) if isinstance(node_id, str) else None
        if not isinstance(node, dict) or node_id in seen:
            return "unresolvable"
        seen.add(node_id)
        class_type = node.get("class_type")
        inputs = node.get("inputs") or {}
        parts: list[Any] = [class_type]
        for name in sorted(inputs):
            value = inputs[name]
            if is_link(value):
                parts.append([name, self._signature(prompt, value[0], memo, seen), value[1]])
            else:
                parts.append([name, value])
        node_def = self.registry.get(class_type) if isinstance(class_type, str) else None
        if node_def is not None and node_def.is_changed is not None:
            try:
                parts.append(["is_changed", node_def.is_changed(self.env, inputs)])
            except Exception as exc:
                parts.append(["is_changed", repr(exc)])
        encoded = json.dumps(parts, sort_keys=True, default=str).encode()
        memo[node_id] = hashlib.sha256(encoded).hexdigest()
        return memo[node_id]

    async def _ensure(self, run: PromptRun, node_id: str, staged: bool) -> None:
        if node_id in run.results:
            return
        entry = self._cached(run, node_id)
        if entry is not None:
            run.results[node_id] = entry.outputs
            if staged:  # ComfyUI only stages cached nodes that are outputs
                self._replay_cached_output(run, node_id, entry)
            return
        for value in run.prompt[node_id]["inputs"].values():
            if is_link(value):
                await self._ensure(run, value[0], staged=False)
        await self._execute_node(run, node_id)

    def _replay_cached_output(self, run: PromptRun, node_id: str, entry: CacheEntry) -> None:
        if entry.ui is not None:
            run.ui[node_id] = entry.ui
        if run.client_id is not None:
            self.hub.send("executed", _executed(run, node_id, entry.ui), run.client_id)
        run.state.finish(node_id)
        run.executed.append(node_id)

    async def _execute_node(self, run: PromptRun, node_id: str) -> None:
        node = run.prompt[node_id]
        node_def = self.registry[node["class_type"]]
        run.state.start(node_id)
        if run.client_id is not None:
            self.hub.last_node_id = node_id
            message = {"node": node_id, "display_node": node_id, "prompt_id": run.prompt_id}
            self.hub.send("executing", message, run.client_id)
        inputs = {
            name: run.results[value[0]][value[1]] if is_link(value) else value
            for name, value in node["inputs"].items()
        }
        result = await self._call_node(run, node_id, node_def, inputs)
        if result.ui is not None:
            run.ui[node_id] = result.ui
            if run.client_id is not None:
                self.hub.send("executed", _executed(run, node_id, result.ui), run.client_id)
        if self.env.config.cache:
            self.cache[run.signatures[node_id]] = CacheEntry(result.outputs, result.ui)
        run.results[node_id] = result.outputs
        run.state.finish(node_id)
        run.executed.append(node_id)

    async def _call_node(
        self, run: PromptRun, node_id: str, node_def: NodeDef, inputs: JsonDict
    ) -> NodeResult:
        base: JsonDict = {
            "prompt_id": run.prompt_id,
            "node_id": node_id,
            "node_type": node_def.name,
        }
        runtime = NodeRuntime(
            env=self.env,
            node_id=node_id,
            prompt_id=run.prompt_id,
            prompt=run.prompt,
            extra_pnginfo=run.item.extra_data.get("extra_pnginfo"),
            hub=self.hub,
            state=run.state,
            check_interrupt=self.check_interrupt,
        )
        try:
            self.check_interrupt()
            if self.env.config.node_delay:
                await asyncio.sleep(self.env.config.node_delay)
            return await node_def.run(runtime, inputs)
        except Interrupted:
            log.info("prompt_interrupted", prompt_id=run.prompt_id, node_id=node_id)
            data = {**base, "executed": list(run.executed)}
            raise NodeFailed("execution_interrupted", data) from None
        except Exception as ex:
            typ, _, tb = sys.exc_info()
            assert typ is not None
            log.info("node_failed", prompt_id=run.prompt_id, node_id=node_id, error=str(ex))
            data = {
                **base,
                "executed": list(run.executed),
                "exception_message": f"{ex}\n",
                "exception_type": type_name(typ),
                "traceback": traceback.format_tb(tb),
                "current_inputs": {k: [format_value(v)] for k, v in inputs.items()},
                "current_outputs": list(run.prompt),
            }
            raise NodeFailed("execution_error", data) from ex


def _executed(run: PromptRun, node_id: str, ui: JsonDict | None) -> JsonDict:
    return {"node": node_id, "display_node": node_id, "output": ui, "prompt_id": run.prompt_id}


def _meta(node_id: str) -> JsonDict:
    return {
        "node_id": node_id,
        "display_node": node_id,
        "parent_node": None,
        "real_node_id": node_id,
    }


def _history_entry(
    item: QueueItem,
    outputs: dict[str, JsonDict],
    meta: dict[str, JsonDict],
    success: bool,
    messages: list[list[Any]],
) -> JsonDict:
    stored = item.as_list()
    for key in SENSITIVE_EXTRA_DATA_KEYS:
        stored[3].pop(key, None)
    status = {"status_str": "success" if success else "error", "completed": success}
    return {
        "prompt": stored,
        "outputs": dict(outputs),
        "status": {**status, "messages": messages},
        "meta": meta,
    }
