"""A drafted manifest for an API-format graph: its output nodes and the params callers vary."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from pydantic import BaseModel

from ..workflows import FILENAME_PREFIX, Graph, Manifest, ParamSpec
from .convert import INPUT_PREFIX
from .nodes import InputDef, NodeDef, model_folder

#: integer bounds a manifest writes: JSON numbers are doubles, exact up to 2**53
SAFE_INT = 2**53 - 1
#: sampler inputs callers vary, and the param each becomes
SAMPLER_PARAMS = {"seed": "seed", "noise_seed": "seed", "steps": "steps", "cfg": "cfg"}
SAMPLER_PARAMS |= {"denoise": "strength"}
LATENT_PARAMS = ("width", "height", "batch_size")


class Draft(BaseModel):
    """The manifest proposed, and for people: each param proposed, each input left fixed."""

    manifest: Manifest
    proposed: list[str] = []
    fixed: list[str] = []


def snake(text: str) -> str:
    name = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return name if re.match(r"^[a-z]", name) else f"p_{name}".rstrip("_")


def draft_manifest(
    name: str,
    graph: Graph,
    nodes: Mapping[str, NodeDef],
    *,
    models: Mapping[str, list[str]] | None = None,
    marks: Mapping[str, list[str]] | None = None,
    source: str = "",
) -> Draft:
    """Propose a manifest for `graph` from the backend's node definitions."""
    drafter = _Drafter(graph, nodes, models)
    for param, targets in (marks or {}).items():
        drafter.propose(snake(param), targets, why=f"a primitive titled '{INPUT_PREFIX}{param}'")
    drafter.titled_inputs()
    drafter.samplers()
    drafter.loaders()
    outputs = sorted((i for i, n in graph.items() if drafter.defs(i).output_node), key=_order)
    manifest = Manifest(
        name=name,
        title=name.replace("_", " ").capitalize(),
        description=f"Imported from {source}." if source else "",
        graph=f"{name}.json",
        outputs=outputs,
        params=drafter.params,
    )
    return Draft(manifest=manifest, proposed=drafter.proposed, fixed=list(drafter.fixed_inputs()))


def _order(node_id: str) -> tuple[tuple[int, int, str], ...]:
    """Node ids in number order, a subgraph's `instance:inner` ids after their instance's."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in node_id.split(":"))


class _Drafter:
    def __init__(
        self, graph: Graph, nodes: Mapping[str, NodeDef], models: Mapping[str, list[str]] | None
    ) -> None:
        self.graph = graph
        self.nodes = nodes
        self.models = models
        self.params: dict[str, ParamSpec] = {}
        self.proposed: list[str] = []
        self.claimed: set[str] = set()

    def defs(self, node_id: str) -> NodeDef:
        return self.nodes.get(self.graph[node_id]["class_type"]) or NodeDef(name="?")

    def title(self, node_id: str) -> str | None:
        """The node's title when its author gave one (not its class's name)."""
        title = str((self.graph[node_id].get("_meta") or {}).get("title") or "")
        spec = self.defs(node_id)
        return title if title and title not in (spec.name, spec.display_name) else None

    def propose(self, name: str, targets: list[str], why: str, **fields: Any) -> None:
        targets = [t for t in targets if t not in self.claimed]
        if not targets:
            return
        node_id, _, input_name = targets[0].partition(".")
        spec = self.defs(node_id).input(input_name) or InputDef(name=input_name, kind="*")
        value = self.graph[node_id]["inputs"].get(input_name)
        title = (self.graph[node_id].get("_meta") or {}).get("title") or spec.name
        where = f"node {node_id} ({title}), input {input_name}"
        where = where if len(targets) == 1 else f"inputs {', '.join(targets)}"
        described = f"{spec.tooltip.rstrip('.')} ({where})." if spec.tooltip else f"{where}."
        folder = self.folder(node_id, spec)
        param = _spec_for(
            spec, value, targets, folder, described[0].upper() + described[1:], **fields
        )
        if param is None:
            return
        name = self._free(name, node_id)
        self.params[name] = param
        self.claimed.update(targets)
        self.proposed.append(f"{name} ({param.type}) → {', '.join(targets)}: {why}")

    def _free(self, name: str, node_id: str) -> str:
        if name not in self.params:
            return name
        prefix = snake(self.title(node_id) or f"{self.graph[node_id]['class_type']}_{node_id}")
        candidate, n = f"{prefix}_{name}", 2
        while candidate in self.params:
            candidate, n = f"{prefix}_{name}_{n}", n + 1
        return candidate

    def folder(self, node_id: str, spec: InputDef) -> str | None:
        return model_folder(self.defs(node_id), spec, self.models)

    def titled_inputs(self) -> None:
        """Nodes titled `input:NAME` (or `input:NAME:INPUT`): a param of their first widget
        input (or of INPUT)."""
        for node_id, node in sorted(self.graph.items(), key=lambda kv: _order(kv[0])):
            title = str((node.get("_meta") or {}).get("title") or "")
            if not title.startswith(INPUT_PREFIX):
                continue
            name, _, chosen = title[len(INPUT_PREFIX) :].partition(":")
            widgets = [i.name for i in self.defs(node_id).inputs if i.is_widget]
            literal = [n for n in widgets if not isinstance(node["inputs"].get(n), list)]
            input_name = chosen.strip() or next(iter(literal), "")
            if name.strip() and input_name in node["inputs"]:
                why = f"node {node_id} is titled {title!r}"
                self.propose(snake(name), [f"{node_id}.{input_name}"], why=why)

    def samplers(self) -> None:
        for node_id in sorted(self.graph, key=_order):
            inputs = self.graph[node_id]["inputs"]
            if not ("positive" in inputs and "negative" in inputs):
                continue
            self._prompt(node_id, "positive", "prompt")
            self._prompt(node_id, "negative", "negative_prompt")
            for input_name, param in SAMPLER_PARAMS.items():
                if input_name in inputs and not isinstance(inputs[input_name], list):
                    fields = {"random": True} if param == "seed" else {}
                    target = f"{node_id}.{input_name}"
                    self.propose(param, [target], why=f"the sampler's {input_name}", **fields)
            latent = inputs.get("latent_image")
            if isinstance(latent, list) and str(latent[0]) in self.graph:
                self._latent(str(latent[0]))

    def _prompt(self, sampler: str, side: str, name: str) -> None:
        encoder = self._encoder(self.graph[sampler]["inputs"][side], 0)
        if encoder is None:
            return
        why = f"the text the sampler's {side} conditioning encodes"
        titled = self.title(encoder)
        required = side == "positive"
        self.propose(snake(titled) if titled else name, [f"{encoder}.text"], why, prompt=required)

    def _encoder(self, link: Any, depth: int) -> str | None:
        """The text encoder behind a conditioning link, through nodes that pass it on."""
        if not isinstance(link, list) or str(link[0]) not in self.graph or depth > 16:
            return None
        node_id, slot = str(link[0]), int(link[1])
        inputs = self.graph[node_id]["inputs"]
        if isinstance(inputs.get("text"), str):
            return node_id
        outputs = self.defs(node_id).outputs
        kind = outputs[slot] if slot < len(outputs) else "CONDITIONING"
        links = [(n, v) for n, v in inputs.items() if isinstance(v, list)]
        named = ("positive", "negative")[slot] if kind == "CONDITIONING" and slot < 2 else None
        for input_name, value in sorted(links, key=lambda nv: nv[0] != named):
            spec = self.defs(node_id).input(input_name)
            if spec is not None and spec.kind == kind:
                return self._encoder(value, depth + 1)
        return None

    def _latent(self, node_id: str) -> None:
        inputs = self.graph[node_id]["inputs"]
        for input_name in LATENT_PARAMS:
            if isinstance(inputs.get(input_name), int):
                why = f"the size of the latent node {node_id}"
                self.propose(input_name, [f"{node_id}.{input_name}"], why=why)

    def loaders(self) -> None:
        """Image loaders become `image` params, model loaders `models` params."""
        for node_id in sorted(self.graph, key=_order):
            for spec in self.defs(node_id).inputs:
                target = f"{node_id}.{spec.name}"
                if spec.image_upload and spec.name in self.graph[node_id]["inputs"]:
                    self.propose(snake(self.title(node_id) or "image"), [target], "an image loader")
                elif spec.name in self.graph[node_id]["inputs"] and (
                    folder := self.folder(node_id, spec)
                ):
                    base = "model" if folder == "checkpoints" else spec.name
                    name = snake(self.title(node_id) or base.removesuffix("_name"))
                    self.propose(name, [target], f"a model in {folder}")

    def fixed_inputs(self) -> Iterator[str]:
        for node_id in sorted(self.graph, key=_order):
            for input_name, value in self.graph[node_id]["inputs"].items():
                if isinstance(value, list) or f"{node_id}.{input_name}" in self.claimed:
                    continue
                kind = self.graph[node_id]["class_type"]
                per_job = " (set per job: the job's output prefix)"
                note = per_job if input_name == FILENAME_PREFIX else ""
                yield f"{node_id}.{input_name} = {value!r} ({kind}){note}"


def _spec_for(
    spec: InputDef,
    value: Any,
    targets: list[str],
    folder: str | None,
    described: str,
    *,
    random: bool = False,
    prompt: bool = False,
) -> ParamSpec | None:
    """The param for one input: its type, range and options from the node's definition, the
    graph's value as default."""
    base: dict[str, Any] = {"targets": targets, "description": described}
    if spec.image_upload:
        return ParamSpec(type="image", required=True, **base)
    if folder:
        return ParamSpec(type="string", default=value, models=folder, max_length=255, **base)
    if spec.kind == "INT" and isinstance(value, int) and not isinstance(value, bool):
        return ParamSpec(type="integer", **_int_bounds(spec, value, random), **base)
    if spec.kind == "FLOAT" and isinstance(value, int | float) and not isinstance(value, bool):
        bounds = {"minimum": spec.minimum, "maximum": spec.maximum}
        return ParamSpec(type="number", default=float(value), **bounds, **base)
    if spec.kind == "BOOLEAN" and isinstance(value, bool):
        return ParamSpec(type="boolean", default=value, **base)
    if spec.kind == "COMBO" and isinstance(value, str):
        return ParamSpec(type="string", default=value, enum=spec.options or None, **base)
    if spec.kind == "STRING" and isinstance(value, str):
        if prompt and not value:
            return ParamSpec(type="string", required=True, min_length=1, **base)
        return ParamSpec(type="string", default=value, **base)
    return None


def _int_bounds(spec: InputDef, value: int, random: bool) -> dict[str, Any]:
    low = max(int(spec.minimum), -SAFE_INT) if spec.minimum is not None else None
    high = min(int(spec.maximum), SAFE_INT) if spec.maximum is not None else None
    step = int(spec.step) if spec.step and spec.step > 1 and float(spec.step).is_integer() else None
    fits = step and value % step == 0 and (low or 0) % step == 0
    fields: dict[str, Any] = {
        "minimum": low,
        "maximum": high,
        "multiple_of": step if fits else None,
    }
    return {**fields, "random": True} if random else {**fields, "default": value}
