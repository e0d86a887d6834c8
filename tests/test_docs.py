"""The README and docs/: well-formed Markdown, and tables that list what the code has.

`python -m tests.test_docs` runs the Markdown check alone (what `make lint` does).
"""

from __future__ import annotations

import itertools
import re
import sys
import urllib.parse
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest
from aiohttp import web
from markdown_it import MarkdownIt
from markdown_it.token import Token
from pydantic import AliasChoices

from formy_async import errors
from formy_async.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCUMENTS = [README, *sorted((ROOT / "docs").glob("*.md"))]
#: a URL with a scheme (https:, mailto:) or protocol-relative: not a file of the repository
EXTERNAL = re.compile(r"^([a-z][a-z0-9+.-]*:|//)", re.IGNORECASE)
CODE_SPAN = re.compile(r"`([^`]+)`")

_PARSER = MarkdownIt("commonmark").enable("table")


# --- the Markdown check ---------------------------------------------------------------------


def markdown_problems(path: Path, text: str | None = None) -> list[str]:
    """Unclosed code fences, fences run together with text, and relative links to nothing."""
    text = path.read_text() if text is None else text
    lines = text.splitlines()
    tokens = _PARSER.parse(text)
    problems = [f"{path.name}:{n}: {what}" for n, what in _fence_problems(tokens, lines)]
    for line, href in _relative_links(tokens):
        if (why := _broken(path, href)) is not None:
            problems.append(f"{path.name}:{line}: link {href!r}: {why}")
    return problems


def _fence_problems(tokens: list[Token], lines: list[str]) -> Iterator[tuple[int, str]]:
    for token in tokens:
        if token.type != "fence" or token.map is None:
            continue
        start, end = token.map
        marker = token.markup
        closing = lines[end - 1].lstrip(" >") if end - 1 > start else ""
        if not (
            closing.startswith(marker) and closing.rstrip() == marker[0] * len(closing.rstrip())
        ):
            yield start + 1, f"the code fence opened here is never closed ({marker})"
        for offset, line in enumerate(lines[start + 1 : end - 1], start + 2):
            # a closing fence must stand alone: "``` Some text" is content and the fence goes on
            stripped = line.lstrip(" >")
            if stripped.startswith(marker) and stripped[len(marker) :].startswith(" "):
                yield (
                    offset,
                    "a fence followed by text inside a code block (put the text on its own line)",
                )


def _relative_links(tokens: list[Token]) -> Iterator[tuple[int, str]]:
    for token in tokens:
        for child in token.children or []:
            href = child.attrGet("href") if child.type == "link_open" else None
            href = child.attrGet("src") if child.type == "image" else href
            if isinstance(href, str) and not EXTERNAL.match(href):
                yield (token.map[0] + 1 if token.map else 0), href


def _broken(document: Path, href: str) -> str | None:
    """Why a relative link leads nowhere, or None when its file (and heading) exist."""
    target, _, anchor = href.partition("#")
    path = (document.parent / urllib.parse.unquote(target)).resolve() if target else document
    if not path.exists():
        return "no such file"
    if anchor and path.suffix == ".md" and anchor not in anchors(path):
        return f"no heading #{anchor} in {path.name}"
    return None


def anchors(path: Path) -> set[str]:
    """The ids GitHub gives a document's headings: lower case, punctuation dropped, `-` for
    spaces, and `-1`, `-2` … after a repeated one."""
    seen: dict[str, int] = {}
    tokens = _PARSER.parse(path.read_text())
    for opening, inline in itertools.pairwise(tokens):
        if opening.type != "heading_open":
            continue
        text = "".join(
            c.content for c in inline.children or [] if c.type in ("text", "code_inline")
        )
        slug = re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")
        seen[slug] = seen.get(slug, -1) + 1
    return {
        slug if n == 0 else f"{slug}-{n}" for slug, count in seen.items() for n in range(count + 1)
    }


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_markdown_has_closed_fences_and_working_relative_links(path: Path) -> None:
    assert markdown_problems(path) == []


def test_markdown_check_finds_a_closing_fence_run_together_with_text() -> None:
    text = "```sh\nmake run\n``` Set `REDIS_URL`.\n\nMore.\n\n```sh\nmake test\n```\n"
    assert markdown_problems(README, text) == [
        "README.md:3: a fence followed by text inside a code block (put the text on its own line)"
    ]


def test_markdown_check_finds_an_unclosed_fence() -> None:
    text = "Text.\n\n```sh\nmake run\n\nMore text, read as code.\n"
    assert markdown_problems(README, text) == [
        "README.md:3: the code fence opened here is never closed (```)"
    ]


def test_markdown_check_finds_a_relative_link_to_nothing() -> None:
    text = "[deploy](docs/deploy.md#heroku) [gone](docs/nope.md) [x](docs/deploy.md#nowhere)\n"
    assert markdown_problems(README, text) == [
        "README.md:1: link 'docs/nope.md': no such file",
        "README.md:1: link 'docs/deploy.md#nowhere': no heading #nowhere in deploy.md",
    ]


# --- the README's tables against the code ---------------------------------------------------


@cache
def tables_under(heading: str) -> list[list[list[str]]]:
    """Every table in the README section under `heading` (until the next heading of its level or
    above): rows of cells, each cell as written (code spans keep their backticks)."""
    tokens = _PARSER.parse(README.read_text())
    tables: list[list[list[str]]] = []
    level = None
    for i, token in enumerate(tokens):
        if token.type == "heading_open":
            if level is not None and int(token.tag[1]) <= level:
                break
            if tokens[i + 1].content == heading:
                level = int(token.tag[1])
        elif level is not None and token.type == "table_open":
            tables.append([])
        elif level is not None and token.type == "tr_open":
            tables[-1].append([])
        elif (
            level is not None
            and token.type == "inline"
            and tokens[i - 1].type in ("td_open", "th_open")
        ):
            tables[-1][-1].append(token.content)
    assert tables, f"no table under the README's heading {heading!r}"
    return tables


def section_text(heading: str) -> str:
    """The README's text under `heading`, until the next heading of its level or above."""
    lines = README.read_text().splitlines()
    (start,) = [
        i for i, line in enumerate(lines) if re.fullmatch(rf"#+ {re.escape(heading)}", line)
    ]
    level = len(lines[start].split()[0])
    end = next(
        (i for i in range(start + 1, len(lines)) if re.match(rf"#{{1,{level}}} ", lines[i])),
        len(lines),
    )
    return "\n".join(lines[start:end])


def error_classes() -> list[type[errors.FormyError]]:
    found, pending = [], [errors.FormyError]
    while pending:
        cls = pending.pop()
        pending += cls.__subclasses__()
        if cls.__module__ == errors.__name__ and cls not in (
            errors.FormyError,
            errors.FormyAPIError,
            errors.FormyConnectionError,
        ):
            found.append(cls)
    return found


def http_error_rows() -> set[tuple[int, str]]:
    """(status, code) for every code of the README's table of HTTP errors."""
    (table, *_) = tables_under("Errors")
    return {(int(row[0]), code) for row in table[1:] for code in CODE_SPAN.findall(row[1])}


def job_error_codes() -> set[str]:
    (_, table) = tables_under("Errors")
    return {code for row in table[1:] for code in CODE_SPAN.findall(row[0])}


def is_job_error(cls: type[errors.FormyError]) -> bool:
    return issubclass(cls, errors.JobFault | errors.ComfyError)


@pytest.mark.parametrize(
    "cls", [c for c in error_classes() if not c.__subclasses__() and not is_job_error(c)], ids=str
)
def test_every_error_the_api_answers_is_in_the_table_with_its_status(
    cls: type[errors.FormyError],
) -> None:
    assert (cls.http_status, cls.code) in http_error_rows()


@pytest.mark.parametrize(
    "cls", [c for c in error_classes() if not c.__subclasses__() and is_job_error(c)], ids=str
)
def test_every_error_a_job_fails_with_is_in_the_job_error_table(
    cls: type[errors.FormyError],
) -> None:
    assert cls.code in job_error_codes()


@pytest.mark.parametrize("cls", [c for c in error_classes() if c.__subclasses__()], ids=str)
def test_every_error_family_is_named_or_in_the_table(cls: type[errors.FormyError]) -> None:
    named = f"`{cls.__name__}`" in section_text("Errors")
    assert named or (cls.http_status, cls.code) in http_error_rows()


def test_codes_the_web_layer_answers_by_hand_are_documented() -> None:
    """Codes outside errors.py: aiohttp's own HTTP errors, the WebSocket's messages."""
    source = {p.name: p.read_text() for p in (ROOT / "formy_async" / "web").glob("*.py")}
    by_hand = {(int(s), c) for s, c in re.findall(r'(\d{3}): "(\w+)"', source["errors.py"])}
    by_hand |= {
        (int(s), c)
        for s, c in re.findall(r'error_response\(\s*(\d{3}),\s*"(\w+)"', "".join(source.values()))
    }
    assert by_hand, "the pattern no longer finds web/errors.py's codes"
    assert by_hand - http_error_rows() == set()
    on_sockets = set(re.findall(r'send_error\(\s*"(\w+)"', source["ws.py"]))
    assert on_sockets, "the pattern no longer finds the WebSocket's codes"
    assert {
        c for c in on_sockets if f"`{c}`" not in section_text("Events and the WebSocket")
    } == set()


def env_names(name: str) -> set[str]:
    """The environment variables a setting is read from."""
    alias = Settings.model_fields[name].validation_alias
    if isinstance(alias, AliasChoices):
        return {str(choice) for choice in alias.choices}
    return {f"FORMY_{name.upper()}"}


def documented_settings() -> set[str]:
    (table,) = tables_under("Configuration")
    return {name for row in table[1:] for name in CODE_SPAN.findall(row[0])}


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_is_in_the_settings_table(name: str) -> None:
    assert env_names(name) & documented_settings(), f"none of {sorted(env_names(name))}"


def test_the_settings_table_names_no_setting_that_does_not_exist() -> None:
    known = set().union(*(env_names(name) for name in Settings.model_fields))
    assert documented_settings() - known == set()


def served_routes() -> set[str]:
    """`METHOD /path` for every route of the app, placeholders as `{}`."""
    from formy_async.web.app import create_app

    app = create_app(Settings(workflows_dir=ROOT / "workflows", secret_key="x" * 32))
    found = set()
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        path = route.resource.canonical if route.resource else ""
        if isinstance(route.resource, web.StaticResource):
            path += "/{}"
        found.add(f"{route.method} {re.sub(r'{[^}]*}', '{}', path)}")
    return found


def documented_routes() -> set[str]:
    (routes,) = tables_under("Jobs")
    (v2_routes,) = tables_under("Comfy API v2 routes")
    spans = [span for row in routes[1:] + v2_routes[1:] for span in CODE_SPAN.findall(row[0])]
    return {re.sub(r"{[^}]*}", "{}", span.split("?")[0]) for span in spans} | {"POST /api/jobs"}


def test_every_route_is_in_the_route_table() -> None:
    assert served_routes() - documented_routes() == set()


def main() -> int:
    """`make lint`'s Markdown check: print each problem, exit 1 if there is one."""
    problems = [problem for path in DOCUMENTS for problem in markdown_problems(path)]
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
