"""What is wrong with a workflow's files, each problem placed at its file and line."""

from __future__ import annotations

import json
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict

Keys = tuple[str, ...]


class Finding(BaseModel):
    """A problem found in a manifest or its graph, at a key path (not yet a line)."""

    model_config = ConfigDict(frozen=True)

    file: Literal["manifest", "graph"]
    keys: Keys = ()
    message: str


class Problem(BaseModel):
    """A problem a person can go to: the file, the line when it is known, what is wrong."""

    model_config = ConfigDict(frozen=True)

    file: str
    line: int | None = None
    message: str
    backend: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        on = f" (on {self.backend})" if self.backend else ""
        return f"{where}: {self.message}{on}"


_TABLE = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r'^\s*("(?:[^"\\]|\\.)*"|[A-Za-z0-9_.\-" ]+?)\s*=')


def _toml_keys(spelled: str) -> Keys:
    return tuple(part.strip().strip('"') for part in re.findall(r'"[^"]*"|[^.]+', spelled))


def toml_line(text: str, keys: Keys) -> int | None:
    """The line (1-based) that sets `keys` (or opens their table) in TOML text; the nearest
    enclosing key's line when the exact one is not written out; None when nothing matches."""
    best: tuple[int, int] | None = None  # (keys matched, line)
    table: Keys = ()
    in_string = False
    for number, line in enumerate(text.splitlines(), 1):
        was_in_string = in_string
        if line.count('"""') % 2 or line.count("'''") % 2:
            in_string = not in_string
        if was_in_string:
            continue
        if match := _TABLE.match(line):
            table, found = _toml_keys(match.group(1)), _toml_keys(match.group(1))
        elif match := _KEY.match(line):
            found = table + _toml_keys(match.group(1))
        else:
            continue
        depth = _common(found, keys)
        if depth == len(found) and (best is None or depth > best[0]):
            best = (depth, number)
    return best[1] if best else None


def _common(found: Keys, keys: Keys) -> int:
    depth = 0
    for a, b in zip(found, keys, strict=False):
        if a != b:
            break
        depth += 1
    return depth


def json_line(text: str, keys: Keys) -> int | None:
    """The line (1-based) of the deepest key of `keys` written in JSON text (object keys only:
    a list index in `keys` stays on its list's key); None when the text does not parse."""
    lines = _JsonLines(text)
    try:
        lines.value(0, ())
    except (ValueError, IndexError):
        return None
    for depth in range(len(keys), 0, -1):
        if keys[:depth] in lines.found:
            return lines.found[keys[:depth]]
    return None


class _JsonLines:
    """Walks JSON text recording the line of every object key, by its key path."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.found: dict[Keys, int] = {}
        self.decoder = json.JSONDecoder()
        self._lines, self._counted = 1, 0  # the line at offset `_counted` (the walk only goes on)

    def _line(self, at: int) -> int:
        self._lines += self.text.count("\n", self._counted, at)
        self._counted = at
        return self._lines

    def _skip(self, at: int) -> int:
        while at < len(self.text) and self.text[at] in " \t\r\n":
            at += 1
        return at

    def value(self, at: int, path: Keys) -> int:
        at = self._skip(at)
        if self.text[at] == "{":
            return self._object(at + 1, path)
        if self.text[at] == "[":
            return self._array(at + 1, path)
        _, end = self.decoder.raw_decode(self.text, at)
        return end

    def _object(self, at: int, path: Keys) -> int:
        at = self._skip(at)
        while self.text[at] != "}":
            key, end = self.decoder.raw_decode(self.text, at)
            self.found.setdefault((*path, str(key)), self._line(at))
            at = self._skip(self._skip(end) + 1)  # past the colon
            at = self._skip(self.value(at, (*path, str(key))))
            if self.text[at] == ",":
                at = self._skip(at + 1)
        return at + 1

    def _array(self, at: int, path: Keys) -> int:
        at = self._skip(at)
        while self.text[at] != "]":
            at = self._skip(self.value(at, path))
            if self.text[at] == ",":
                at = self._skip(at + 1)
        return at + 1
