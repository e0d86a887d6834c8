"""Bringing a ComfyUI export into the catalogue: convert it, draft its manifest, check it."""
