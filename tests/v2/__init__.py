"""Comfy API v2 served by the stack, driven by the official SDK."""
