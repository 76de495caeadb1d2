"""``gateway scan``: output formats, stdin, errors, secrets, --policy, --chunk-size, seeking."""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.classify.formats import Format
from gateway.classify.formats.base import Extract, RandomAccess, Unscannable
from gateway.classify.formats.files import file_access
from gateway.classify.formats.testing import registered
from gateway.cli import main

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = "name,id,phone\nChan,11010519491231002X,+86 138 1234 5678\nLee,A123456(3),13912345678\n"
VALUES = ("11010519491231002X", "138 1234 5678", "A123456(3)", "13912345678", "12345678")


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    path = tmp_path / "people.csv"
    path.write_text(SAMPLE, encoding="utf-8")
    return path


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_json_one_object_per_path(
    sample: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "clean.txt"
    other.write_text("nothing to see\n")
    code, out, err = run(["scan", "--json", str(sample), str(other)], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert list(first)[:3] == ["path", "bytes", "sha256"]
    assert first["path"] == str(sample)
    assert first["bytes"] == len(SAMPLE.encode())
    assert first["labels"]["pii.cn_resident_id"] == {"count": 1, "distinct": 1}
    assert first["labels"]["pii.cn_phone"] == {"count": 2, "distinct": 2}
    assert first["labels"]["pii.hk_id"] == {"count": 1, "distinct": 1}
    assert first["subjects"] == 2
    assert set(first) >= {"content", "unscannable", "seconds"}
    assert second["labels"] == {}
    assert all(v not in out for v in VALUES)


def test_table_output(sample: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["scan", str(sample)], capsys)
    assert code == 0
    assert str(sample) in out
    assert "pii.cn_resident_id" in out
    assert "subjects 2" in out
    assert all(v not in out for v in VALUES)


def test_stdin(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(SAMPLE.encode())))
    code, out, _ = run(["scan", "--json", "-"], capsys)
    assert code == 0
    record = json.loads(out)
    assert record["path"] == "-"
    assert record["labels"]["pii.cn_resident_id"]["count"] == 1


def test_missing_file_and_directory_exit_2_naming_the_path(
    sample: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.csv"
    code, out, err = run(["scan", "--json", str(missing), str(sample), str(tmp_path)], capsys)
    assert code == 2
    assert len(out.splitlines()) == 1  # the good path is still scanned
    assert f"{missing}: No such file or directory" in err
    assert f"{tmp_path}: " in err
    assert "Traceback" not in err


def test_chunk_size_does_not_change_the_result(
    sample: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEWAY_SECRET", "ab" * 32)
    _, whole, _ = run(["scan", "--json", str(sample)], capsys)
    _, tiny, _ = run(["scan", "--json", "--chunk-size", "1", str(sample)], capsys)
    a, b = json.loads(whole), json.loads(tiny)
    a.pop("seconds"), b.pop("seconds")
    assert a == b


@pytest.mark.parametrize("value", ["not-hex", "abcd"])
def test_bad_secret_is_a_usage_error(
    sample: Path, value: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("GATEWAY_SECRET", value)
    code, out, err = run(["scan", str(sample)], capsys)
    assert code == 2
    assert out == ""
    assert "GATEWAY_SECRET" in err


def test_bad_chunk_size(sample: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["scan", "--chunk-size", "0", str(sample)], capsys)
    assert code == 2
    assert "--chunk-size" in err


def test_policy_adds_custom_detectors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    policy = tmp_path / "policy"
    shutil.copytree(ROOT / "policies", policy)
    (policy / "90-project.yaml").write_text(
        "detectors:\n  custom.project_falcon:\n    keywords: [falcon]\n"
    )
    data = tmp_path / "notes.txt"
    data.write_text("Project Falcon results, falcon phase 2\n")
    code, out, err = run(["scan", "--json", "--policy", str(policy), str(data)], capsys)
    assert code == 0, err
    assert json.loads(out)["labels"]["custom.project_falcon"] == {"count": 2, "distinct": 1}


def test_invalid_policy_is_reported_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "policy"
    policy.mkdir()
    (policy / "bad.yaml").write_text("detectors:\n  custom.x:\n    patterns: ['(unclosed']\n")
    data = tmp_path / "d.txt"
    data.write_text("x")
    code, out, err = run(["scan", "--policy", str(policy), str(data)], capsys)
    assert code == 2
    assert out == ""
    assert "bad.yaml" in err
    assert "Traceback" not in err


def test_the_file_name_is_classified_as_a_transfer_name_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The proxy classifies a transfer's path; scan does the same with a file's
    # base name (not its directories, which do not cross the border).
    folder = tmp_path / "11010519491231002X"
    folder.mkdir()
    named = folder / "visit 13912345678.txt"
    named.write_text("nothing to see\n")
    code, out, err = run(["scan", "--json", str(named)], capsys)
    assert code == 0, err
    labels = json.loads(out)["labels"]
    assert labels == {"pii.cn_phone": {"count": 1, "distinct": 1}}
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"nothing to see\n")))
    code, out, _ = run(["scan", "--json", "-"], capsys)
    assert json.loads(out)["labels"] == {}


# --------------------------------------------------------------------------- random access

#: A stand-in footer-indexed format: magic, filler, then the text and, in the
#: last 8 bytes, where the text starts. Only a reader that seeks sees the text.
FOOTER_MAGIC = b"HKSZFOOT"
FOOTER_NAME = "test-cli-footer"


def _read_footer(source: RandomAccess, out: Extract) -> None:
    start = int.from_bytes(source.read_at(source.size - 8, 8), "little")
    member = out.member("text", "text/plain")
    member.write(source.read_at(start, source.size - 8 - start).decode())
    member.close()


@pytest.fixture
def footer_format() -> Iterator[None]:
    fmt = Format(
        FOOTER_NAME,
        "application/x-test-footer",
        lambda prefix: prefix.startswith(FOOTER_MAGIC),
        random=_read_footer,
    )
    with registered(fmt):
        yield


def footer_file(text: str) -> bytes:
    body = FOOTER_MAGIC + bytes(100_000)
    return body + text.encode() + len(body).to_bytes(8, "little")


def test_a_random_access_file_is_read_by_seeking(
    footer_format: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "table.bin"
    path.write_bytes(footer_file(SAMPLE))
    code, out, err = run(["scan", "--json", "--chunk-size", "4096", str(path)], capsys)
    assert code == 0, err
    record = json.loads(out)
    assert record["content"]["type"] == "application/x-test-footer"
    assert record["labels"]["pii.cn_resident_id"] == {"count": 1, "distinct": 1}
    assert record["unscannable"] == []
    assert err == ""


def test_stdin_that_cannot_seek_leaves_a_random_access_format_unscannable(
    footer_format: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = footer_file(SAMPLE)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    code, out, err = run(["scan", "--json", "-"], capsys)
    assert code == 0
    record = json.loads(out)
    assert record["unscannable"] == [f"{FOOTER_NAME}: needs random access"]
    assert record["bytes"] == len(data)
    assert "give the file's path instead of a pipe" in err


def test_stdin_redirected_from_a_file_can_seek(
    footer_format: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "table.bin"
    path.write_bytes(footer_file(SAMPLE))
    with path.open("rb") as raw:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(raw))
        code, out, _ = run(["scan", "--json", "-"], capsys)
    assert code == 0
    assert json.loads(out)["labels"]["pii.cn_resident_id"]["count"] == 1


def test_file_access_reads_at_any_offset(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")
    with path.open("rb") as stream:
        access = file_access(stream)
        assert access is not None
        assert access.size == 10
        assert access.read_at(3, 4) == b"3456"
        assert access.read_at(8, 100) == b"89"
        assert access.read_at(20, 5) == b""
        with pytest.raises(Unscannable):
            access.read_at(-1, 2)
        assert stream.read() == b"0123456789"  # positioned reads leave the offset alone
    read_end, write_end = os.pipe()
    try:
        with os.fdopen(read_end, "rb", closefd=False) as pipe:
            assert file_access(pipe) is None
    finally:
        os.close(read_end)
        os.close(write_end)


def _device_log(path: Path, header: str) -> Path:
    rng = random.Random(5)
    rows = "".join(
        f"2026-03-01T00:{i % 60:02d},{rng.randint(10**10, 10**11 - 1)}\n" for i in range(3000)
    )
    path.write_text(f"time,{header}\n{rows}", encoding="utf-8")
    return path


def test_table_output_shows_what_was_set_aside(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _device_log(tmp_path / "log.csv", "device")
    code, out, _ = run(["scan", str(data)], capsys)
    assert code == 0
    assert "no findings" in out
    assert "chance: pii.cn_phone" in out
    assert "column: table 0 column 1 'device' pii.cn_phone:" in out
    assert out.rstrip().endswith("-> chance")


def test_policy_header_words_make_a_column_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policy = tmp_path / "policy"
    shutil.copytree(ROOT / "policies", policy)
    (policy / "95-words.yaml").write_text("chance:\n  headers:\n    pii.cn_phone: [gerät]\n")
    data = _device_log(tmp_path / "log.csv", "Gerät")
    code, out, _ = run(["scan", "--json", "--policy", str(policy), str(data)], capsys)
    assert code == 0
    result = json.loads(out)
    assert result["labels"]["pii.cn_phone"]["count"] > 150
    assert [c["verdict"] for c in result["columns"] if c["label"] == "pii.cn_phone"] == ["named"]
