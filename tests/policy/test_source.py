"""YAML with positions: every value and key knows its line and column."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.policy.source import (
    MAX_POLICY_FILE_BYTES,
    MAX_VALUES,
    PolicyIssue,
    PolicyLoadError,
    Position,
    parse_yaml,
    read_yaml,
)


def test_positions_of_values_and_keys() -> None:
    doc, issues = parse_yaml("a:\n  b: [x, 'y']\n  c: 3\n", "f.yaml")
    assert issues == []
    assert doc.data == {"a": {"b": ["x", "y"], "c": 3}}
    assert doc.at(("a", "b", 1)) == Position("f.yaml", 2, 10)
    assert doc.at(("a", "c"), key=True) == Position("f.yaml", 3, 3)
    # A path that does not exist falls back to its nearest ancestor.
    assert doc.at(("a", "missing", 4)) == Position("f.yaml", 2, 3)


def test_scalars_keep_yaml_types_but_timestamps_stay_text() -> None:
    doc, issues = parse_yaml("i: 10_000\nb: true\nn: null\nd: 2024-03-22\nf: 1.5\n", "f")
    assert issues == []
    assert doc.data == {"i": 10000, "b": True, "n": None, "d": "2024-03-22", "f": 1.5}


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("a: 1\na: 2\n", (2, 1), "duplicate key 'a' (first at line 1)"),
        ("a: !!python/object:os.system x\n", (1, 4), "unsupported YAML tag"),
        ("a: [1, 2\n", (2, 1), "YAML syntax error"),
        ("a: 1\n---\nb: 2\n", (3, 1), "one YAML document per file"),
        ("base: &b {x: 1}\nother:\n  <<: *b\n", (3, 3), "merge keys"),
        ("? [a, b]\n: 1\n", (1, 3), "a key must be a plain string"),
        ("a: \x07\n", (1, 4), "character not allowed"),
    ],
)
def test_problems_are_positioned(text: str, where: tuple[int, int], message: str) -> None:
    _, issues = parse_yaml(text, "p.yaml")
    assert issues, text
    assert (issues[0].position.line, issues[0].position.col) == where
    assert message in issues[0].message


def test_alias_bomb_is_refused() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 8):
        prev = f"*a{i - 1}"
        lines.append(f"a{i}: &a{i} [{', '.join([prev] * 10)}]")
    _, issues = parse_yaml("\n".join(lines) + "\n", "bomb.yaml")
    assert issues
    assert f"more than {MAX_VALUES} values" in issues[0].message


def test_deep_nesting_is_refused() -> None:
    _, issues = parse_yaml("a: " + "[" * 100 + "]" * 100 + "\n", "deep.yaml")
    assert issues
    assert "nested deeper" in issues[0].message


def test_read_yaml_limits_and_encoding(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (MAX_POLICY_FILE_BYTES + 1))
    assert "larger than" in read_yaml(big)[1][0].message
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"a: 1\nb: caf\xe9\n")
    issue = read_yaml(latin)[1][0]
    assert (issue.position.line, issue.position.col, issue.message) == (
        2,
        7,
        "not valid UTF-8 text",
    )
    ok = tmp_path / "ok.yaml"
    ok.write_text("a: 1\n")
    doc, issues = read_yaml(ok)
    assert issues == []
    assert doc.directory == tmp_path


def test_issue_and_error_rendering() -> None:
    first = PolicyIssue(Position("b.yaml", 3, 1), "second")
    second = PolicyIssue(Position("a.yaml", 9, 2), "first")
    assert str(second) == "a.yaml:9:2: first"
    assert str(PolicyIssue(Position("x.yaml"), "m", warning=True)) == "x.yaml: warning: m"
    err = PolicyLoadError([first, second])
    assert err.errors == [second, first]
    assert err.detail == "a.yaml:9:2: first (and 1 more)"
    with pytest.raises(ValueError, match="at least one"):
        PolicyLoadError([])


@pytest.mark.parametrize(
    ("text", "col"),
    [('a: "x\\0y"\n', 4), ('a: "\\ud800"\n', 4), ('"\\x07": 1\n', 1)],
)
def test_escaped_control_characters_and_surrogates_are_refused(text: str, col: int) -> None:
    _, issues = parse_yaml(text, "c.yaml")
    assert len(issues) == 1
    # libyaml already refuses a lone surrogate escape; PyYAML's pure parser lets it through.
    assert "invalid Unicode" in issues[0].message
    assert issues[0].position.line == 1
    assert issues[0].position.col >= col
