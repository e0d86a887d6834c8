"""The client side, on the core dependencies only: the async client, the CLI's client commands
and webhook signatures."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api import FormyClient, WorkflowInfo

__all__ = ["FormyClient", "WorkflowInfo"]


def __getattr__(name: str) -> Any:
    """The async client, imported on first use: the worker needs only webhook signatures."""
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
