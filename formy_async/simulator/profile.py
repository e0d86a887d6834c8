"""Which ComfyUI the simulator imitates: every behaviour that differs between its releases."""

from __future__ import annotations

import re
from dataclasses import dataclass

# The first release of the current line (the doc's "Newer ComfyUI" section covers 0.25 → 0.38.x).
NEW_PROFILE_SINCE = (0, 25)
_VERSION_RE = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?$")


def parse_version(version: str) -> tuple[int, ...]:
    """'0.38.1' -> (0, 38, 1); a leading 'v' is allowed; anything else is a ValueError."""
    match = _VERSION_RE.match(version.strip())
    if match is None:
        raise ValueError(f"not a ComfyUI version: {version!r} (expected e.g. '0.3.64' or '0.38.1')")
    return tuple(int(part) for part in match.groups() if part is not None)


@dataclass(frozen=True)
class Profile:
    """The behaviours of one ComfyUI release line; `new` is 0.25 and later.

    Each flag names where the difference comes from, so a test can assert it per profile.
    """

    version: str
    release: tuple[int, ...]

    @property
    def new(self) -> bool:
        return self.release[:2] >= NEW_PROFILE_SINCE

    @property
    def validates_prompt_ids(self) -> bool:
        # jobs.validate_job_id, called by POST /prompt since 0.25 (doc "Newer ComfyUI" 1)
        return self.new

    @property
    def has_jobs_api(self) -> bool:
        # server.py /api/jobs routes (doc "Newer ComfyUI" 2); 0.3.64 answers 404
        return self.new

    @property
    def job_detail_has_workflow(self) -> bool:
        # GET /api/jobs/{id} of a pending or running job: no workflow on 0.33 (observed), a
        # workflow in the 0.38.x jobs.py (read); 0.38 is where the simulator starts adding it
        return self.release[:2] >= (0, 38)

    @property
    def strips_sensitive_on_submit(self) -> bool:
        # new server.py pops the API-node keys before queuing; 0.3.64 only strips them from history
        return self.new

    @property
    def stamps_create_time(self) -> bool:
        # new server.py sets extra_data["create_time"] (ms) on every queued prompt (doc 10)
        return self.new

    @property
    def checks_v3_combos(self) -> bool:
        # new execution.validate_inputs checks "COMBO" inputs against their options; 0.3.64 only
        # checks list-typed combos, so V3 nodes' combos (SaveVideo.format, ...) pass unchecked
        return self.new

    @property
    def names_missing_node_type(self) -> bool:
        # new execution.validate_prompt answers missing_node_type where 0.3.64 says invalid_prompt
        return self.new

    @property
    def shows_values_by_repr(self) -> bool:
        # value_not_in_list details: new ComfyUI prints repr(value) (5), 0.3.64 quotes it ('5')
        return self.new

    @property
    def reports_dependency_cycles(self) -> bool:
        # new validate_inputs reports dependency_cycle per node; 0.3.64 gives empty node_errors
        return self.new

    @property
    def history_keeps_every_cached_ui(self) -> bool:
        # 0.3.64 builds history outputs from its whole UI cache (every node of the prompt whose UI
        # is cached, even one this run did not reach); newer ones only from what this run emitted
        return not self.new


def profile_for(version: str) -> Profile:
    return Profile(version=version, release=parse_version(version))
