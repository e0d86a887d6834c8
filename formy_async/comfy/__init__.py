"""Talking to ComfyUI: the client every process uses, and the typed shapes of what it sends."""

from .client import ComfyClient

__all__ = ["ComfyClient"]
