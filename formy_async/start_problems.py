"""Why a service process could not start or listen, each said in one line."""

from __future__ import annotations

import errno
import os

from pydantic import ValidationError

#: why a server cannot listen: the port is taken, the address is not this machine's, or privileged
LISTEN_ERRNOS = frozenset({errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES})


def startup_problem(exc: ValueError) -> str:
    """A start-up failure in one line: each bad setting named by its variable, or the reason."""
    if not isinstance(exc, ValidationError):
        return str(exc)
    return "; ".join(f"{_variable(e['loc'])}: {e['msg']}" for e in exc.errors())


def _variable(loc: tuple[int | str, ...]) -> str:
    name = str(loc[0]) if loc else "settings"
    if not name.isupper():
        return f"FORMY_{name.upper()}"  # a field read under its FORMY_ name only
    plain = name.removeprefix("FORMY_")  # pydantic names the first alias; say the one set
    return plain if plain in os.environ and name not in os.environ else name


def listen_problem(exc: OSError, host: str, port: int) -> str:
    """Why a server could not listen, in one line, with what to do about it."""
    reason = os.strerror(exc.errno) if exc.errno else str(exc)  # not asyncio's long sentence
    taken = exc.errno == errno.EADDRINUSE
    hint = " (is another server running there? choose another port)" if taken else ""
    return f"cannot listen on {host}:{port}: {reason}{hint}"
