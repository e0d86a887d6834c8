"""The editor's workflow format (nodes, links, widget values) converted to the API format."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from ..workflows import Graph
from .editor import (
    BYPASSED,
    EDITOR_ONLY,
    MUTED,
    PRIMITIVE,
    REROUTE,
    EditorLink,
    EditorNode,
    EditorWorkflow,
)
from .nodes import CONTROL_VALUES, InputDef, NodeDef
from .subgraphs import expand_subgraphs

#: the title prefix that makes a node (or a primitive feeding nodes) a param: `input:style`
INPUT_PREFIX = "input:"


class ConversionError(ValueError):
    """An export this converter cannot turn into a correct API-format graph."""


class Converted(BaseModel):
    """An API-format graph, the params titled primitives ask for, and what was left out."""

    graph: Graph
    #: param name → its "node_id.input" targets, from primitives titled `input:NAME`
    marks: dict[str, list[str]] = {}
    notes: list[str] = []


class _Source(BaseModel):
    value: Any = None
    link: list[Any] | None = None
    mark: str | None = None


def is_editor_format(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("nodes"), list)


def editor_workflow(data: Mapping[str, Any]) -> EditorWorkflow:
    """An editor export read, its subgraphs expanded."""
    try:
        return expand_subgraphs(EditorWorkflow.model_validate(data))
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"])
        raise ConversionError(f"not a ComfyUI workflow export: {where}: {error['msg']}") from exc
    except ValueError as exc:
        raise ConversionError(str(exc)) from exc


def editor_classes(data: Mapping[str, Any]) -> set[str]:
    """The node classes an editor export uses that a backend must define."""
    return {node.type for node in editor_workflow(data).nodes} - EDITOR_ONLY


def convert(data: Mapping[str, Any], nodes: Mapping[str, NodeDef]) -> Converted:
    """The API-format graph of an editor export, given the backend's node definitions."""
    return _Converter(editor_workflow(data), nodes).run()


class _Converter:
    def __init__(self, workflow: EditorWorkflow, nodes: Mapping[str, NodeDef]) -> None:
        self.workflow = workflow
        self.defs = nodes
        self.nodes = {n.key: n for n in workflow.nodes}
        self.links = {str(link.id): link for link in workflow.links}
        self.result = Converted(graph={})

    def run(self) -> Converted:
        self._refuse_what_cannot_be_converted()
        for node in self.workflow.nodes:
            if node.type in EDITOR_ONLY:
                continue
            if node.mode == MUTED:
                self.result.notes.append(f"node {node.id} ({node.type}) is muted: left out")
                continue
            if node.mode == BYPASSED:
                self.result.notes.append(f"node {node.id} ({node.type}) is bypassed: left out")
                continue
            self.result.graph[node.key] = self._node(node, self.defs[node.type])
        return self.result

    def _refuse_what_cannot_be_converted(self) -> None:
        group_nodes = set((self.workflow.extra or {}).get("groupNodes") or {})
        for node in self.workflow.nodes:
            if node.type.startswith(("workflow>", "workflow/")) or node.type in group_nodes:
                raise ConversionError(
                    f"node {node.id} is a group node ({node.type!r}): group nodes are not "
                    "converted; convert it to nodes in ComfyUI's editor or use Export (API)"
                )
        missing = sorted(
            f"{n.id} ({n.type})"
            for n in self.workflow.nodes
            if n.type not in self.defs and n.type not in EDITOR_ONLY
        )
        if missing:
            raise ConversionError(f"node classes the backend does not have: {', '.join(missing)}")

    def _node(self, node: EditorNode, spec: NodeDef) -> dict[str, Any]:
        inputs = {**_widget_inputs(node, spec), **node.overrides}
        for slot in node.inputs:
            if slot.link is None:
                continue
            source = self._source(slot.link, 0)
            if source is None:  # fed by a muted node: a widget keeps its own value
                continue
            inputs[slot.name] = source.link if source.link is not None else source.value
            if source.mark:
                self.result.marks.setdefault(source.mark, []).append(f"{node.key}.{slot.name}")
        title = node.title or spec.display_name or node.type
        return {"class_type": node.type, "inputs": inputs, "_meta": {"title": title}}

    def _source(self, link_id: int | str, depth: int) -> _Source | None:
        """Where a link's value really comes from: through reroutes and bypassed nodes, from a
        primitive's value, or None when a muted node (or nothing) feeds it."""
        link = self.links.get(str(link_id))
        origin = self.nodes.get(str(link.origin_id)) if link else None
        if link is None or origin is None or depth > 64:
            return None
        if origin.type == REROUTE:
            upstream = origin.inputs[0].link if origin.inputs else None
            return None if upstream is None else self._source(upstream, depth + 1)
        if origin.type == PRIMITIVE:
            values = origin.widgets_values
            value = values[0] if isinstance(values, list) and values else None
            title = origin.title or ""
            mark = title[len(INPUT_PREFIX) :].strip() if title.startswith(INPUT_PREFIX) else None
            return _Source(value=value, mark=mark or None)
        if origin.mode == MUTED:
            return None
        if origin.mode == BYPASSED:
            through = _passed_through(origin, link)
            return None if through is None else self._source(through, depth + 1)
        return _Source(link=[origin.key, link.origin_slot])


def _passed_through(node: EditorNode, link: EditorLink) -> int | str | None:
    """The input link a bypassed node hands on for one of its outputs: the input of the same
    type at the same slot if there is one, else the first of that type."""
    wanted = node.outputs[link.origin_slot].type if link.origin_slot < len(node.outputs) else None
    wanted = wanted if wanted is not None else link.type
    same_type = [
        (i, s) for i, s in enumerate(node.inputs) if s.type == wanted and s.link is not None
    ]
    for index, slot in same_type:
        if index == link.origin_slot:
            return slot.link
    return same_type[0][1].link if same_type else None


def _widget_inputs(node: EditorNode, spec: NodeDef) -> dict[str, Any]:
    """The node's widget values by input name, in the order its class lays them out (with the
    extra "control after generate" value after a seed, and a dynamic combo's revealed ones)."""
    values = node.widgets_values
    if isinstance(values, dict):
        return {i.name: values[i.name] for i in spec.inputs if i.is_widget and i.name in values}
    queue = list(values or [])
    found: dict[str, Any] = {}
    _take(queue, [i for i in spec.inputs if i.is_widget], "", found)
    return found


def _take(queue: list[Any], inputs: list[InputDef], prefix: str, found: dict[str, Any]) -> None:
    for spec in inputs:
        if not queue:
            return
        value = queue.pop(0)
        name = prefix + spec.name
        found[name] = value
        if spec.has_control_widget and queue and queue[0] in CONTROL_VALUES:
            queue.pop(0)
        revealed = spec.revealed.get(str(value))
        if revealed:
            _take(queue, [i for i in revealed if i.is_widget], f"{name}.", found)
