"""Configuration: paths relative to the file; token digests checked wherever they come from."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.server.config import load_settings, token_digest


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


DIGEST = token_digest("tok-metrics-scraper")


def test_metrics_tokens_default_to_none_and_load_from_the_file(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text("")
    assert load_settings(config).metrics_tokens == ()
    config.write_text(f'metrics_tokens = ["{DIGEST}"]\n')
    assert load_settings(config).metrics_tokens == (DIGEST,)


@pytest.mark.parametrize(
    "bad",
    [
        "tok-metrics-scraper",  # the token itself, pasted by mistake
        DIGEST.upper(),
        DIGEST[:-1],
        DIGEST + "0",
        DIGEST + "\n",
        " " + DIGEST,
    ],
)
@pytest.mark.parametrize(
    ("written", "where"),
    [
        ('metrics_tokens = ["{bad}"]\n', "metrics_tokens"),
        ('[egress]\nofficer_tokens = ["{bad}"]\n', "egress.officer_tokens"),
    ],
)
def test_token_digest_lists_refuse_anything_but_lower_case_sha256_hex(
    tmp_path: Path, bad: str, written: str, where: str
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(written.format(bad=json.dumps(bad)[1:-1]))
    with pytest.raises(ConfigError, match=rf"gateway\.toml: {re.escape(where)}: .*SHA-256 digests"):
        load_settings(config)


def test_metrics_tokens_from_the_environment_are_a_json_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # How deploy/kubernetes passes them: GATEWAY_METRICS_TOKENS from the Secret.
    other = token_digest("tok-next-scraper")
    monkeypatch.setenv("GATEWAY_METRICS_TOKENS", json.dumps([DIGEST, other]))
    assert load_settings().metrics_tokens == (DIGEST, other)
    monkeypatch.setenv("GATEWAY_METRICS_TOKENS", DIGEST)
    with pytest.raises(ConfigError, match=r"metrics_tokens.*GATEWAY_METRICS_TOKENS='\[\""):
        load_settings()
    monkeypatch.setenv("GATEWAY_METRICS_TOKENS", '["tok-metrics-scraper"]')
    with pytest.raises(ConfigError, match=r"environment: metrics_tokens: .*SHA-256 digests"):
        load_settings()
