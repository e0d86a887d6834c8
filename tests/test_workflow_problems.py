"""Where in a workflow's TOML and JSON text a problem is: the line of a key path."""

from __future__ import annotations

from formy_async.workflow_problems import json_line, toml_line

TOML = '''name = "w"
description = """
[params.fake]
type = "not a key"
"""

[params.steps]
type = "integer"
targets = ["3.steps"]

[params.size.presets]
"1:1" = { width = 1 }
'''

JSON = """{
  "3": {
    "class_type": "KSampler",
    "inputs": {"seed": 1,
      "steps": [2, {"x": 1}]}
  }
}
"""


def test_toml_line_is_the_line_that_sets_the_key() -> None:
    assert toml_line(TOML, ("params", "steps", "type")) == 8


def test_toml_line_falls_back_to_the_enclosing_table() -> None:
    assert toml_line(TOML, ("params", "steps", "minimum")) == 7


def test_toml_line_skips_multiline_strings() -> None:
    assert toml_line(TOML, ("params", "fake", "type")) is None


def test_toml_line_reads_quoted_keys() -> None:
    assert toml_line(TOML, ("params", "size", "presets", "1:1")) == 12


def test_json_line_is_the_line_of_the_deepest_key_written() -> None:
    assert json_line(JSON, ("3", "inputs", "steps")) == 5
    assert json_line(JSON, ("3", "inputs", "cfg")) == 4


def test_json_line_of_text_that_does_not_parse_is_none() -> None:
    assert json_line("{not json", ("3",)) is None
