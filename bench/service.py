"""The project as a production install has it (`.[server]`), for the processes the bench measures.

The development install carries what the tests need (moto, playwright, schemathesis, …), and
some of it reaches the service's processes too: PyJWT loads `cryptography` whenever it is
installed, ~9 MB of every process's RSS that no deployment has. So every process a row starts
runs in a virtualenv holding the server extra only (see bench.venvs), named by a hash of
`pyproject.toml` and of where the tree is, and installed editable: it runs this tree's code as
it is now.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from . import venvs
from .procs import ROOT


def venv_dir() -> Path:
    key = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + str(ROOT).encode())
    return venvs.cache_dir() / f"formy-async-server-{key.hexdigest()[:12]}"


def python() -> Path:
    return venv_dir() / "bin" / "python"


async def ensure_installed() -> Path:
    """The production install's interpreter, building its venv first when it is not there yet."""
    return await venvs.ensure(venv_dir(), python(), "-e", f"{ROOT}[server]")


def installed() -> list[str]:
    """`pip freeze` of that venv: the exact versions that ran."""
    return venvs.frozen(venv_dir())
