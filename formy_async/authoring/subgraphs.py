"""Subgraphs of an editor export expanded in place, as ComfyUI's own API export names them.

An instance's inner nodes become `instance:inner` (nested: `a:b:inner`); its input ports become
reroutes of what feeds the instance (or primitives of its promoted widget values), its output
ports reroutes of what feeds them inside, so the conversion follows them like any reroute.
"""

from __future__ import annotations

from typing import Any

from .editor import (
    BYPASSED,
    MUTED,
    PRIMITIVE,
    REROUTE,
    SUBGRAPH_INPUT,
    SUBGRAPH_OUTPUT,
    EditorLink,
    EditorNode,
    EditorSlot,
    EditorWorkflow,
    SubgraphDef,
)
from .nodes import CONTROL_VALUES

MAX_DEPTH = 16


class SubgraphError(ValueError):
    """A subgraph that cannot be expanded faithfully (it contains itself, or is malformed)."""


def expand_subgraphs(workflow: EditorWorkflow) -> EditorWorkflow:
    definitions = workflow.subgraphs()
    if not any(node.type in definitions for node in workflow.nodes):
        return workflow
    expansion = _Expansion(definitions)
    expansion.scope(workflow.nodes, workflow.links, "", None, {}, 0)
    return workflow.model_copy(update={"nodes": expansion.nodes, "links": expansion.links})


class _Expansion:
    def __init__(self, definitions: dict[str, SubgraphDef]) -> None:
        self.definitions = definitions
        self.nodes: list[EditorNode] = []
        self.links: list[EditorLink] = []

    def scope(
        self,
        nodes: list[EditorNode],
        links: list[EditorLink],
        prefix: str,
        forced: int | None,
        overrides: dict[str, dict[str, Any]],
        depth: int,
    ) -> None:
        """Add one graph level's nodes and links, renamed under `prefix`."""
        if depth > MAX_DEPTH:
            raise SubgraphError(f"subgraphs nest deeper than {MAX_DEPTH} (one contains itself?)")
        instances = {n.key for n in nodes if n.type in self.definitions}
        for link in links:
            self.links.append(_renamed_link(link, prefix, instances))
        for node in nodes:
            if node.key in instances:
                self.instance(node, prefix, forced, depth)
                continue
            mode = forced if forced is not None else node.mode
            update = {
                "id": f"{prefix}{node.key}",
                "mode": mode,
                "inputs": [_relinked(slot, prefix) for slot in node.inputs],
                "overrides": {**node.overrides, **overrides.get(node.key, {})},
            }
            self.nodes.append(node.model_copy(update=update))

    def instance(self, node: EditorNode, prefix: str, forced: int | None, depth: int) -> None:
        definition = self.definitions[node.type]
        inner = f"{prefix}{node.key}:"
        own = forced if forced is not None else node.mode
        mode = own if own in (MUTED, BYPASSED) else None
        values, overrides = _promoted(node, definition)
        for k, port in enumerate(definition.inputs):
            slot = _slot(node.inputs, k, port.name)
            if slot is not None and slot.link is not None:
                self.nodes.append(_reroute(f"{inner}in{k}", f"{prefix}{slot.link}", port.type))
            elif port.name in values:
                primitive = EditorNode(
                    id=f"{inner}in{k}", type=PRIMITIVE, widgets_values=[values[port.name]]
                )
                self.nodes.append(primitive)
            else:
                self.nodes.append(_reroute(f"{inner}in{k}", None, port.type))
        self.scope(definition.nodes, definition.links, inner, mode, overrides, depth + 1)
        for j, port in enumerate(definition.outputs):
            self.nodes.append(
                _reroute(f"{inner}out{j}", self._feed(node, j, prefix, mode), port.type)
            )

    def _feed(self, node: EditorNode, j: int, prefix: str, mode: int | None) -> str | None:
        """The link that feeds output port j of an instance: from inside; from the instance's
        input of the same type when it is bypassed; none when it is muted."""
        definition = self.definitions[node.type]
        if mode == MUTED:
            return None
        if mode == BYPASSED:
            wanted = definition.outputs[j].type
            same = [s for s in node.inputs if s.type == wanted and s.link is not None]
            chosen = node.inputs[j] if j < len(node.inputs) and node.inputs[j] in same else None
            chosen = chosen or (same[0] if same else None)
            return f"{prefix}{chosen.link}" if chosen else None
        feeding = [
            link
            for link in definition.links
            if link.target_id == SUBGRAPH_OUTPUT and link.target_slot == j
        ]
        return f"{prefix}{node.key}:{feeding[0].id}" if feeding else None


def _renamed_link(link: EditorLink, prefix: str, instances: set[str]) -> EditorLink:
    origin, slot = f"{prefix}{link.origin_id}", link.origin_slot
    if link.origin_id == SUBGRAPH_INPUT:
        origin, slot = f"{prefix}in{link.origin_slot}", 0
    elif str(link.origin_id) in instances:
        origin, slot = f"{prefix}{link.origin_id}:out{link.origin_slot}", 0
    target = f"{prefix}{link.target_id}"
    if link.target_id == SUBGRAPH_OUTPUT:
        target = f"{prefix}out{link.target_slot}"
    update = {"id": f"{prefix}{link.id}", "origin_id": origin, "origin_slot": slot}
    return link.model_copy(update={**update, "target_id": target})


def _relinked(slot: EditorSlot, prefix: str) -> EditorSlot:
    return slot if slot.link is None else slot.model_copy(update={"link": f"{prefix}{slot.link}"})


def _reroute(node_id: str, link: str | None, kind: Any) -> EditorNode:
    return EditorNode(
        id=node_id,
        type=REROUTE,
        inputs=[EditorSlot(type=kind, link=link)],
        outputs=[EditorSlot(type=kind)],
    )


def _slot(slots: list[EditorSlot], index: int, name: str) -> EditorSlot | None:
    named = [s for s in slots if s.name == name]
    if named:
        return named[0]
    return slots[index] if index < len(slots) else None


def _promoted(
    node: EditorNode, definition: SubgraphDef
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The instance's own widget values: by input port name, and by inner node (the widgets
    `properties.proxyWidgets` promotes: `["-1", port]` or `[inner node id, widget]`)."""
    values = node.widgets_values
    if isinstance(values, dict):
        return dict(values), {}
    listed = list(values or [])
    proxies = node.properties.get("proxyWidgets")
    ports: dict[str, Any] = {}
    inner: dict[str, dict[str, Any]] = {}
    if isinstance(proxies, list):
        for (owner, widget), value in zip(proxies, listed, strict=False):
            if str(owner) == "-1":
                ports[str(widget)] = value
            else:
                inner.setdefault(str(owner), {})[str(widget)] = value
        return ports, inner
    # before proxy widgets: the instance's widget inputs, in order, each with its value
    for slot in node.inputs:
        if slot.widget is None or not listed:
            continue
        ports[slot.name] = listed.pop(0)
        if slot.type == "INT" and listed and listed[0] in CONTROL_VALUES:
            listed.pop(0)
    return ports, inner
