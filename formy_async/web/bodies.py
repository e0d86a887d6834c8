"""Request bodies: read within FORMY_BODY_TIMEOUT, JSON parsed within bounds, multipart forms
opened within their limit."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import AsyncIterator, Iterator
from typing import Any

from aiohttp import MultipartReader, web
from aiohttp.http_exceptions import BadHttpMessage

from ..errors import (
    InvalidBody,
    JsonTooDeep,
    MalformedJson,
    MissingFile,
    NumberOutOfRange,
    RequestTimeout,
    UploadTooLarge,
)
from .context import SETTINGS

MAX_JSON_DEPTH = 20
#: what the parts of a form other than its file may add to a body over the file's limit
FORM_OVERHEAD = 64 * 1024
#: the largest integer (either sign) a body may hold: every ComfyUI input takes it (a seed
#: goes up to 2**64 - 1), and refusing longer ones spares converting 4,000-digit numbers
MAX_JSON_INT = 2**64 - 1
_MAX_INT_DIGITS = len(str(MAX_JSON_INT))


@contextlib.asynccontextmanager
async def body_deadline(request: web.Request) -> AsyncIterator[None]:
    """Reads of the body inside must end within FORMY_BODY_TIMEOUT, or the request gets 408.

    The connection's own guard stops at the headers (see `serving`): a client that sends
    them and then dribbles the body would otherwise hold a handler for as long as it likes.
    """
    seconds = request.app[SETTINGS].body_timeout
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        raise RequestTimeout(f"the request body did not arrive within {seconds:g} s") from None


async def read_json(request: web.Request) -> Any:
    """The body as JSON (the app bounds its size, `body_deadline` its time).

    Nesting deeper than MAX_JSON_DEPTH is refused, and so is any number no field could hold:
    NaN and ±Infinity (not JSON, though Python's parser takes them), floats past a double's
    range, integers past ±MAX_JSON_INT.
    """
    try:
        async with body_deadline(request):
            text = await request.text()
        body = json.loads(
            text, parse_int=_bounded_int, parse_float=_finite_float, parse_constant=_not_json
        )
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MalformedJson(f"the body is not valid JSON: {exc}") from None
    except LookupError:  # Content-Type named a charset Python does not know
        raise MalformedJson(f"the body's charset {request.charset!r} is unknown") from None
    except RecursionError:  # the parser recurses once per level: it stops near 1,000
        raise JsonTooDeep(f"the JSON is nested more than {MAX_JSON_DEPTH} levels deep") from None
    if _depth(body) > MAX_JSON_DEPTH:
        raise JsonTooDeep(f"the JSON is nested more than {MAX_JSON_DEPTH} levels deep")
    return body


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > _MAX_INT_DIGITS or abs(value := int(text)) > MAX_JSON_INT:
        shown = text if len(text) <= 24 else f"{text[:20]}… ({len(text)} characters)"
        raise NumberOutOfRange(f"{shown}: integers in the body must lie within ±{MAX_JSON_INT}")
    return value


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        shown = text if len(text) <= 24 else f"{text[:20]}…"
        raise NumberOutOfRange(f"{shown}: the number is beyond the range of a double")
    return value


def _not_json(name: str) -> Any:
    raise MalformedJson(f"the body is not valid JSON: {name} is not a JSON number")


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > MAX_JSON_DEPTH:
            break
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


async def multipart_of(request: web.Request, limit: int, what: str) -> MultipartReader:
    """The form's parts, to be read inside `malformed_forms`; a body declared over `limit`
    (its file's) is refused before any of it is read, and so is one that is not a form."""
    if request.content_length is not None and request.content_length > limit + FORM_OVERHEAD:
        raise UploadTooLarge(f"the upload is over the limit of {limit} bytes")
    if not request.content_type.startswith("multipart/"):
        raise MissingFile(f"send multipart/form-data with {what} in a part named `file`")
    try:
        return await request.multipart()
    except ValueError:  # no boundary in the Content-Type: there are no parts to read
        raise MissingFile("the multipart/form-data Content-Type names no boundary") from None


@contextlib.contextmanager
def malformed_forms() -> Iterator[None]:
    """A form whose parts cannot be read is a 400 that says so, not a 500."""
    try:
        yield
    except BadHttpMessage as exc:  # a part's headers that are not HTTP headers
        raise InvalidBody(f"the multipart body is malformed: {exc.message}") from None
    except ValueError as exc:  # no boundary where one belongs, or the body ends too soon
        raise InvalidBody(f"the multipart body is malformed: {exc}") from None
