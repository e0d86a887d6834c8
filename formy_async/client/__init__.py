"""The client side, on the core dependencies only: the async client, the CLI's client commands
and webhook signatures."""

from .api import FormyClient, WorkflowInfo

__all__ = ["FormyClient", "WorkflowInfo"]
