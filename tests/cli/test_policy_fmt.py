"""``gateway policy fmt``: rewriting in place, ``--check``/``--diff`` for CI, errors, stdin."""

from __future__ import annotations

import io
import os
import shutil
import stat
import sys
import tempfile
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.policy.loader import load_policy
from tests.policy.test_fmt import four_space_layout

SHIPPED = Path(__file__).resolve().parents[2] / "policies"

MESSY = (
    "rules:\n"
    "    # blocks credentials (CSL Art. 21)\n"
    "    -   reason: Credentials never cross.\n"
    "        action: block\n"
    "        id: creds\n"
    "        when: {labels: {any: [secret.credential]}}   \n"
)
CANONICAL = (
    "rules:\n"
    "  # blocks credentials (CSL Art. 21)\n"
    "  - id: creds\n"
    "    action: block\n"
    "    reason: Credentials never cross.\n"
    "    when: {labels: {any: [secret.credential]}}\n"
)
MESSY_CASES = (
    "cases:\n"
    "- expect: {rule: creds, action: block}\n"
    "  text: 'AKIAIOSFODNN7EXAMPLE'\n"
    "  name: an access key blocks\n"
    "  route: {direction: sz->hk}\n"
    "  sender: {organisation: sz-univ}\n"
)
CANONICAL_CASES = (
    "cases:\n"
    "  - name: an access key blocks\n"
    "    route: {direction: sz->hk}\n"
    "    sender: {organisation: sz-univ}\n"
    "    text: 'AKIAIOSFODNN7EXAMPLE'\n"
    "    expect: {action: block, rule: creds}\n"
)
BROKEN = "rules:\n  - id: r\n    action: block\n   reason: bad indentation\n"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def messy(tmp_path: Path) -> Path:
    directory = tmp_path / "policies"
    directory.mkdir()
    (directory / "10-creds.yaml").write_text(MESSY)
    (directory / "10-creds_test.yaml").write_text(MESSY_CASES)
    (directory / "20-ok.yml").write_text(CANONICAL)
    (directory / "notes.txt").write_text("not\tyaml   \n")
    (directory / "samples").mkdir()
    (directory / "samples" / "x.yaml").write_text("not:   touched\n")
    return directory


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(directory)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def test_fmt_rewrites_policy_and_test_files_in_place(
    capsys: pytest.CaptureFixture[str], messy: Path
) -> None:
    (messy / "10-creds.yaml").chmod(0o640)
    code, out, err = run(capsys, "policy", "fmt", str(messy))
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"formatted {messy}/10-creds.yaml",
        f"formatted {messy}/10-creds_test.yaml",
    ]
    assert (messy / "10-creds.yaml").read_text() == CANONICAL
    assert (messy / "10-creds_test.yaml").read_text() == CANONICAL_CASES
    assert stat.S_IMODE((messy / "10-creds.yaml").stat().st_mode) == 0o640
    # Only the *.yaml/*.yml files directly in the directory; no temporary file left.
    assert (messy / "notes.txt").read_text() == "not\tyaml   \n"
    assert (messy / "samples" / "x.yaml").read_text() == "not:   touched\n"
    assert sorted(p.name for p in messy.iterdir()) == [
        "10-creds.yaml",
        "10-creds_test.yaml",
        "20-ok.yml",
        "notes.txt",
        "samples",
    ]
    assert run(capsys, "policy", "fmt", "--check", str(messy))[0] == 0


def test_check_lists_what_is_not_canonical_exits_1_and_writes_nothing(
    capsys: pytest.CaptureFixture[str], messy: Path
) -> None:
    before = snapshot(messy)
    code, out, err = run(capsys, "policy", "fmt", "--check", str(messy))
    assert code == 1
    assert out.splitlines() == [
        f"{messy}/10-creds.yaml: not in canonical layout "
        f"(gateway policy fmt {messy}/10-creds.yaml rewrites it)",
        f"{messy}/10-creds_test.yaml: not in canonical layout "
        f"(gateway policy fmt {messy}/10-creds_test.yaml rewrites it)",
    ]
    assert err == ""
    assert snapshot(messy) == before


def test_check_diff_prints_a_unified_diff(capsys: pytest.CaptureFixture[str], messy: Path) -> None:
    before = snapshot(messy)
    code, out, _ = run(capsys, "policy", "fmt", "--check", "--diff", str(messy / "10-creds.yaml"))
    assert code == 1
    lines = out.splitlines()
    assert lines[1] == f"--- {messy}/10-creds.yaml"
    assert lines[2] == f"+++ {messy}/10-creds.yaml (formatted)"
    assert "-        id: creds" in lines
    assert "+  - id: creds" in lines
    assert "+    reason: Credentials never cross." in lines
    # --diff alone implies --check: it writes nothing either.
    assert run(capsys, "policy", "fmt", "--diff", str(messy))[0] == 1
    assert snapshot(messy) == before


def test_check_of_canonical_files_is_silent_and_exits_0(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "p.yaml").write_text(CANONICAL)
    assert run(capsys, "policy", "fmt", "--check", "--diff", str(tmp_path)) == (0, "", "")


def test_a_file_that_does_not_parse_is_named_left_alone_and_the_others_formatted(
    capsys: pytest.CaptureFixture[str], messy: Path
) -> None:
    (messy / "05-broken.yaml").write_bytes(BROKEN.encode())
    code, out, err = run(capsys, "policy", "fmt", str(messy))
    assert code == 1
    assert err.splitlines() == [
        f"{messy}/05-broken.yaml:4:4: YAML syntax error: did not find expected '-' indicator",
        f"{messy}/05-broken.yaml: left unchanged",
    ]
    assert (messy / "05-broken.yaml").read_bytes() == BROKEN.encode()
    assert f"formatted {messy}/10-creds.yaml" in out
    assert (messy / "10-creds.yaml").read_text() == CANONICAL


def test_check_reports_a_broken_file_with_exit_1_too(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "p.yaml").write_text(BROKEN)
    code, out, err = run(capsys, "policy", "fmt", "--check", str(tmp_path))
    assert (code, out) == (1, "")
    assert err.startswith(f"{tmp_path}/p.yaml:4:4: YAML syntax error")


def test_invalid_utf8_is_located(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_bytes(b"name: ok\nreason: caf\xe9\n")
    code, _, err = run(capsys, "policy", "fmt", str(tmp_path / "p.yaml"))
    assert code == 1
    assert err == f"{tmp_path}/p.yaml:2:12: not valid UTF-8 text\n"
    assert (tmp_path / "p.yaml").read_bytes() == b"name: ok\nreason: caf\xe9\n"


def test_a_missing_path_exits_2_and_the_others_are_still_formatted(
    capsys: pytest.CaptureFixture[str], messy: Path
) -> None:
    code, out, err = run(
        capsys, "policy", "fmt", str(messy / "absent.yaml"), str(messy / "10-creds.yaml")
    )
    assert code == 2
    assert err == f"gateway policy fmt: {messy}/absent.yaml: no such file or directory\n"
    assert out == f"formatted {messy}/10-creds.yaml\n"


def test_without_a_path_it_formats_the_policy_directory(
    capsys: pytest.CaptureFixture[str], messy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(messy.parent)
    code, out, _ = run(capsys, "policy", "fmt", "--check")
    assert code == 1
    assert out.startswith("policies/10-creds.yaml: not in canonical layout")


def test_a_symbolic_link_stays_a_link_to_the_formatted_file(
    capsys: pytest.CaptureFixture[str], messy: Path
) -> None:
    link = messy / "link.yaml"
    link.symlink_to(messy / "10-creds.yaml")
    assert run(capsys, "policy", "fmt", str(link))[0] == 0
    assert link.is_symlink()
    assert (messy / "10-creds.yaml").read_text() == CANONICAL


def test_a_directory_it_cannot_write_in_exits_2_and_leaves_the_file(
    capsys: pytest.CaptureFixture[str], messy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(*args: object, **kwargs: object) -> tuple[int, str]:
        raise PermissionError(13, "Permission denied")

    # (chmod cannot show it: the tests may run as root, whom permissions do not stop.)
    monkeypatch.setattr(tempfile, "mkstemp", refused)
    code, out, err = run(capsys, "policy", "fmt", str(messy / "10-creds.yaml"), str(messy))
    assert code == 2
    assert err.splitlines() == [
        f"gateway policy fmt: {messy}/{name}: cannot write: Permission denied"
        for name in ("10-creds.yaml", "10-creds.yaml", "10-creds_test.yaml")
    ]
    assert out == ""
    assert (messy / "10-creds.yaml").read_text() == MESSY


def test_a_failed_rename_leaves_the_file_and_no_temporary_file(
    capsys: pytest.CaptureFixture[str], messy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refused)
    code, _, err = run(capsys, "policy", "fmt", str(messy / "10-creds.yaml"))
    assert code == 2
    assert "cannot write: No space left on device" in err
    assert (messy / "10-creds.yaml").read_text() == MESSY
    assert [p.name for p in messy.iterdir() if p.name.startswith(".")] == []


def test_a_file_saved_while_formatting_is_left_as_saved(
    capsys: pytest.CaptureFixture[str], messy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.policy import fmt

    target = messy / "10-creds.yaml"
    real = fmt.format_text

    def officer_saves_meanwhile(text: str, file: str) -> str:
        out = real(text, file)
        target.write_text(MESSY + "# saved by the officer\n")
        return out

    monkeypatch.setattr(fmt, "format_text", officer_saves_meanwhile)
    code, _, err = run(capsys, "policy", "fmt", str(target))
    assert code == 2
    assert err == f"gateway policy fmt: {target}: changed while formatting; left as saved\n"
    assert target.read_text() == MESSY + "# saved by the officer\n"
    assert [p.name for p in messy.iterdir() if p.name.startswith(".")] == []


def test_stdin_to_stdout(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(MESSY.encode())))
    assert run(capsys, "policy", "fmt", "-") == (0, CANONICAL, "")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(MESSY.encode())))
    code, out, _ = run(capsys, "policy", "fmt", "--check", "-")
    assert (code, out) == (1, "<stdin>: not in canonical layout\n")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(BROKEN.encode())))
    code, out, err = run(capsys, "policy", "fmt", "-")
    assert (code, out) == (1, "")
    assert err.startswith("<stdin>:4:4: YAML syntax error")


def test_the_shipped_packs_are_canonical(capsys: pytest.CaptureFixture[str]) -> None:
    # CI keeps them so: a pack saved in another layout fails here (gateway policy fmt fixes it).
    code, out, err = run(capsys, "policy", "fmt", "--check", "--diff", str(SHIPPED))
    assert (code, out, err) == (0, "", "")


def test_formatting_a_scrambled_copy_of_the_shipped_packs_restores_them(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    copy = tmp_path / "policies"
    shutil.copytree(SHIPPED, copy)
    for path in copy.glob("*.yaml"):
        path.write_text(four_space_layout(path.read_text()))
    base = copy / "00-base.yaml"
    scrambled = base.read_text().replace(
        "    -   id: base-credentials\n        action: block\n",
        "    -   action: block\n        id: base-credentials\n",
    )
    assert scrambled != base.read_text()
    base.write_bytes(scrambled.replace("\n", "\r\n").encode())
    assert run(capsys, "policy", "fmt", "--check", str(copy))[0] == 1
    assert run(capsys, "policy", "fmt", str(copy))[0] == 0
    for path in SHIPPED.glob("*.yaml"):
        assert (copy / path.name).read_bytes() == path.read_bytes(), path.name
    # Against an untouched copy, not the shipped packs: the demo pack names its
    # recipients' key files by relative paths, which `make run` creates beside
    # the shipped packs (var/demo/...) and which lead nowhere from either copy.
    untouched = tmp_path / "untouched" / "policies"
    shutil.copytree(SHIPPED, untouched)
    version = load_policy(untouched, require_keys=False).version
    assert load_policy(copy, require_keys=False).version == version
    code, out, _ = run(capsys, "policy", "test", str(copy))
    assert code == 0, out
