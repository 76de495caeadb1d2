"""Configuration files: relative paths are taken relative to the file, not the working directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.server.config import load_settings


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("park/ledger.sqlite3", "{base}/park/ledger.sqlite3"),
        ("sqlite:///park/ledger.sqlite3", "sqlite:///{base}/park/ledger.sqlite3"),
        ("sqlite:////srv/ledger.sqlite3", "sqlite:////srv/ledger.sqlite3"),
        ("/srv/ledger.sqlite3", "/srv/ledger.sqlite3"),
        ("memory:", "memory:"),
        ("postgresql://gateway@db:5432/ledger", "postgresql://gateway@db:5432/ledger"),
    ],
)
def test_ledger_url_is_relative_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, written: str, expected: str
) -> None:
    config = tmp_path / "etc" / "gateway.toml"
    config.parent.mkdir()
    config.write_text(f'ledger_url = "{written}"\nsecret_file = "secret"\n')
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    settings = load_settings(config)
    assert settings.ledger_url == expected.format(base=config.parent)
    assert Path(str(settings.secret_file)) == config.parent / "secret"
