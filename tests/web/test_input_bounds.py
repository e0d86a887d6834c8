"""Numbers no field can take, JSON too deep to parse, bodies no parser can read: a 4xx JSON
error, never a 500."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from formy_async.embedded import Stack

from ..conftest import ADMIN_TOKEN, TOKEN
from ..helpers import api_session, follow, submit

pytestmark = pytest.mark.redis

#: as a query string would carry them: huge, negative, past int64, past uint64, past Python's
#: int digit limit, not finite, not a number
QUERY_VALUES = [
    "99999999999999999999",
    "-1",
    str(2**63),
    str(10**20),
    "9" * 5000,
    "nan",
    "inf",
    "-inf",
    "1e400",
    "abc",
    "",
]
#: the same in JSON text (NaN and Infinity are what Python's json module would let through)
JSON_VALUES = [
    str(10**30),
    "-1",
    str(2**63),
    str(10**20),
    "9" * 5000,
    "NaN",
    "Infinity",
    "-Infinity",
    "1e400",
    '"abc"',
]
#: a cursor is a position: any finite number is one, so only the values that are not finite
#: (or not numbers) are out of range
CURSOR_VALUES = ["9" * 5000, "nan", "inf", "-inf", "1e400", "abc", ""]


@pytest.fixture
async def done_job(stack: Stack) -> AsyncIterator[dict[str, Any]]:
    """alice's finished job with one output: every route has something to look at."""
    async with api_session() as session:
        job = await submit(session, stack.url, prompt="a fox", steps=1, width=64, height=64)
        done = (await follow(session, stack.url, job["id"]))[-1]
    yield {"id": job["id"], "output": done["outputs"][0]["filename"]}


async def _answers(
    stack: Stack, method: str, path: str, token: str = TOKEN, **kwargs: Any
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, stack.url + path, headers=headers, **kwargs) as r,
    ):
        body = await r.json() if r.content_type == "application/json" else await r.read()
        return r.status, body


def _refusals(answers: list[tuple[str, int, Any]]) -> list[tuple[str, int, Any]]:
    """The answers that are not a 4xx JSON error with a code (what the tests expect none of)."""
    return [
        (value[:40], status, body)
        for value, status, body in answers
        if not (
            400 <= status < 500
            and isinstance(body, dict)
            and isinstance(body.get("error", {}).get("code"), str)
        )
    ]


QUERY_ROUTES = {
    "jobs limit": ("/api/jobs?limit={}", QUERY_VALUES),
    "jobs cursor": ("/api/jobs?cursor={}", CURSOR_VALUES),
    "events after": ("/api/jobs/{job}/events?after={}", QUERY_VALUES),
    "output exp": ("/api/jobs/{job}/outputs/{output}?sig=0&exp={}", QUERY_VALUES),
    "preview exp": ("/api/jobs/{job}/preview?sig=0&exp={}", QUERY_VALUES),
    "upload exp": ("/api/uploads/" + "0" * 32 + "?sig=0&exp={}", QUERY_VALUES),
}


@pytest.mark.parametrize("field", sorted(QUERY_ROUTES))
async def test_an_out_of_range_query_number_gets_a_4xx_json_error(
    stack: Stack, done_job: dict[str, Any], field: str
) -> None:
    template, values = QUERY_ROUTES[field]
    answers = []
    for value in values:
        path = template.replace("{job}", done_job["id"]).replace("{output}", done_job["output"])
        answers.append((value, *await _answers(stack, "GET", path.format(value))))
    assert _refusals(answers) == []


def _submission(params: str = "", top: str = "") -> str:
    """A submission as JSON text, with raw JSON members added to its params and to itself."""
    return '{"workflow": "text_to_image", "params": {"prompt": "a"' + params + "}" + top + "}"


BODY_FIELDS: dict[str, Callable[[str], str]] = {
    "time_limit": lambda v: _submission(top=f', "time_limit": {v}'),
    "params.steps (integer)": lambda v: _submission(params=f', "steps": {v}'),
    "params.seed (integer)": lambda v: _submission(params=f', "seed": {v}'),
    "params.cfg (number)": lambda v: _submission(params=f', "cfg": {v}'),
    "graph input (admin)": lambda v: (
        '{"graph": {"1": {"class_type": "KSampler", "inputs": {"seed": ' + v + "}}}}"
    ),
}


@pytest.mark.parametrize("field", sorted(BODY_FIELDS))
async def test_an_out_of_range_body_number_gets_a_4xx_json_error(stack: Stack, field: str) -> None:
    answers = []
    for value in JSON_VALUES:
        status, body = await _answers(
            stack,
            "POST",
            "/api/jobs",
            ADMIN_TOKEN,
            data=BODY_FIELDS[field](value),
            headers={"Content-Type": "application/json"},
        )
        answers.append((value, status, body))
    assert _refusals(answers) == []


@pytest.mark.parametrize("where", ["start", "end"])
async def test_an_out_of_range_byte_range_is_never_a_server_error(
    stack: Stack, done_job: dict[str, Any], where: str
) -> None:
    path = f"/api/jobs/{done_job['id']}/outputs/{done_job['output']}"
    statuses, refused = set(), []
    for value in QUERY_VALUES:
        wanted = f"bytes={value}-" if where == "start" else f"bytes=0-{value}"
        status, body = await _answers(stack, "GET", path, headers={"Range": wanted})
        statuses.add(status)
        if status >= 400:
            refused.append((value, status, body))
    # a Range a server cannot use may be ignored (200) or refused (416), as a JSON error
    assert statuses <= {200, 206, 416}
    assert _refusals(refused) == []


async def test_a_range_past_the_end_of_an_output_is_a_json_416_with_its_size(
    stack: Stack, done_job: dict[str, Any]
) -> None:
    path = f"/api/jobs/{done_job['id']}/outputs/{done_job['output']}"
    headers = {"Authorization": f"Bearer {TOKEN}", "Range": "bytes=100000000-"}
    async with (
        aiohttp.ClientSession() as session,
        session.get(stack.url + path, headers=headers) as r,
    ):
        body = await r.json()
        assert r.status == 416
        assert body["error"]["code"] == "range_not_satisfiable"
        assert r.headers["Content-Range"].startswith("bytes */")


async def test_json_nested_100000_levels_deep_is_json_too_deep(stack: Stack) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    status, body = await _answers(
        stack,
        "POST",
        "/api/jobs",
        data=_submission(params=f', "x": {deep}'),
        headers={"Content-Type": "application/json"},
    )
    assert (status, body["error"]["code"]) == (400, "json_too_deep")


async def test_an_integer_of_5000_digits_is_number_out_of_range(stack: Stack) -> None:
    status, body = await _answers(
        stack,
        "POST",
        "/api/jobs",
        data=_submission(params=', "seed": ' + "9" * 5000),
        headers={"Content-Type": "application/json"},
    )
    assert (status, body["error"]["code"]) == (400, "number_out_of_range")


async def test_a_body_in_an_unknown_charset_is_malformed_json(stack: Stack) -> None:
    status, body = await _answers(
        stack,
        "POST",
        "/api/jobs",
        data=_submission(),
        headers={"Content-Type": "application/json; charset=no-such-charset"},
    )
    assert (status, body["error"]["code"]) == (400, "malformed_json")


#: `after` values for a subscription, as JSON text (the last is as deep as a message may be)
WS_AFTERS = [*JSON_VALUES, "[" * 30_000 + "]" * 30_000]


async def test_an_out_of_range_subscription_gets_an_error_on_a_socket_that_stays_open(
    stack: Stack, done_job: dict[str, Any]
) -> None:
    codes = []
    async with api_session() as session, session.ws_connect(stack.url + "/ws") as ws:
        for after in WS_AFTERS:
            await ws.send_str(
                f'{{"type": "subscribe", "job_id": "{done_job["id"]}", "after": {after}}}'
            )
            answer = await ws.receive(timeout=10)
            codes.append(answer.json()["error"]["code"] if answer.type.name == "TEXT" else answer)
        await ws.send_json({"type": "subscribe", "job_id": done_job["id"], "after": 0})
        still_open = (await ws.receive_json(timeout=10))["type"]
    assert (codes, still_open) == (["bad_message"] * len(WS_AFTERS), "subscribed")
