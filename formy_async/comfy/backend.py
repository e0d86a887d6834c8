"""What a ComfyUI server says of itself: its version, its feature flags, which routes it has."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel

#: the first release line whose client prompt ids must be canonical UUIDs and that has the
#: jobs API; a server is still asked what it has rather than judged by its number
JOBS_API_SINCE = (0, 25)


def version_tuple(version: str) -> tuple[int, ...]:
    """`"0.38.1"` → (0, 38, 1); anything unreadable → ()."""
    match = re.match(r"^v?(\d+(?:\.\d+)*)", version.strip())
    return tuple(int(part) for part in match.group(1).split(".")) if match else ()


class BackendInfo(BaseModel):
    """A backend's version and capabilities, read once and kept until it goes down."""

    version: str = "unknown"
    features: dict[str, Any] = {}
    #: `/api/jobs/{id}` and `/api/jobs/{id}/cancel` answer (ComfyUI 0.25 and later)
    jobs_api: bool = False

    @property
    def preview_metadata(self) -> bool:
        """Previews come as binary event 4 naming their prompt (for a client that asks)."""
        return self.features.get("supports_preview_metadata") is True

    def uses(self) -> list[str]:
        """The newer features this client uses on this backend, for people to read."""
        used = []
        if self.jobs_api:
            used.append("jobs API (cancel without racing the next prompt, reconcile by id)")
        if self.preview_metadata:
            used.append("previews with metadata")
        if self.features.get("assets"):
            used.append("asset fields (read, not needed)")
        return used

    def describe(self) -> str:
        uses = ", ".join(self.uses()) or "the classic API only"
        return f"ComfyUI {self.version}; uses: {uses}"
