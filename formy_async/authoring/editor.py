"""The editor's workflow format (what ComfyUI's Save and Export write): the parts we read."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

#: editor-only node types: they never reach the backend
PRIMITIVE, REROUTE = "PrimitiveNode", "Reroute"
NOTES = frozenset({"Note", "MarkdownNote"})
EDITOR_ONLY = NOTES | {PRIMITIVE, REROUTE}
MUTED, BYPASSED = 2, 4
#: the ids a subgraph's links give its own input and output ports
SUBGRAPH_INPUT, SUBGRAPH_OUTPUT = -10, -20

LinkId = int | str
NodeId = int | str
_LINK_FIELDS = ("id", "origin_id", "origin_slot", "target_id", "target_slot", "type")


class EditorLink(BaseModel):
    id: LinkId
    origin_id: NodeId
    origin_slot: int
    target_id: NodeId
    target_slot: int
    type: Any = None


class EditorSlot(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = ""
    type: Any = None
    link: LinkId | None = None
    links: list[LinkId] | None = None
    widget: dict[str, Any] | None = None


class EditorNode(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: NodeId
    type: str
    mode: int = 0
    title: str | None = None
    inputs: list[EditorSlot] = []
    outputs: list[EditorSlot] = []
    widgets_values: list[Any] | dict[str, Any] | None = None
    properties: dict[str, Any] = {}
    #: widget values a subgraph instance sets on this node (its promoted widgets)
    overrides: dict[str, Any] = {}

    @property
    def key(self) -> str:
        return str(self.id)


def link_dicts(value: Any) -> Any:
    """Schema 0.4 writes a link as `[id, origin, slot, target, slot, type]`; 1.0, an object."""
    return [
        dict(zip(_LINK_FIELDS, link, strict=False)) if isinstance(link, list) else link
        for link in value or []
    ]


class SubgraphPort(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = ""
    type: Any = None


class SubgraphDef(BaseModel):
    """One entry of `definitions.subgraphs`: a graph of its own with input and output ports."""

    model_config = ConfigDict(extra="allow")

    id: str
    name: str = ""
    nodes: list[EditorNode] = []
    links: list[EditorLink] = []
    inputs: list[SubgraphPort] = []
    outputs: list[SubgraphPort] = []

    @field_validator("links", mode="before")
    @classmethod
    def _links(cls, value: Any) -> Any:
        return link_dicts(value)


class EditorWorkflow(BaseModel):
    model_config = ConfigDict(extra="allow")

    nodes: list[EditorNode]
    links: list[EditorLink] = []
    definitions: dict[str, Any] | None = None
    extra: dict[str, Any] | None = None

    @field_validator("links", mode="before")
    @classmethod
    def _links(cls, value: Any) -> Any:
        return link_dicts(value)

    def subgraphs(self) -> dict[str, SubgraphDef]:
        found = (self.definitions or {}).get("subgraphs") or []
        return {s.id: s for s in (SubgraphDef.model_validate(d) for d in found)}
