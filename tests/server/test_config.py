"""Configuration: paths relative to the file; token digests checked wherever they come from."""

from __future__ import annotations

import base64
import hashlib
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


# --- public-key pins (issue 11, finding 8) ---------------------------------------------

#: A pin as `gateway certs show` prints it (any 32 bytes, base64).
PIN = base64.b64encode(hashlib.sha256(b"twin key").digest()).decode()
#: What the twin's certificate was pinned by before: a hex whole-certificate fingerprint.
FINGERPRINT = hashlib.sha256(b"twin certificate").hexdigest()


def _ingress(path: Path, extra: str) -> Path:
    path.write_text(
        "[ingress]\nidentity = 'id.agekey'\ntwin_names = ['gateway-hk']\n"
        f"{extra}\n[ingress.tls]\ncert = 'c.pem'\nkey = 'k.pem'\n"
    )
    return path


def test_twin_spki_is_required_when_names_admit_a_twin(tmp_path: Path) -> None:
    # A config from before key pinning: names only. It must not start.
    config = _ingress(tmp_path / "sz.toml", "")
    with pytest.raises(ConfigError, match=r"sz\.toml: ingress\.twin_spki: .*required") as caught:
        load_settings(config)
    assert "gateway certs show" in str(caught.value)
    # Pinned by key: loads (the sha256// prefix of curl and HPKP is accepted).
    for written in (PIN, "sha256//" + PIN):
        settings = load_settings(_ingress(config, f"twin_spki = ['{written}']"))
        assert settings.ingress is not None
        assert settings.ingress.twin_spki == (PIN,)
    # The older whole-certificate pin still names the key: it loads as it did.
    assert load_settings(_ingress(config, f"twin_fingerprints = ['{FINGERPRINT}']")).ingress
    # No names admit no one, so there is nothing to pin.
    config.write_text(
        "[ingress]\nidentity = 'id.agekey'\ntwin_names = []\n"
        "[ingress.tls]\ncert = 'c.pem'\nkey = 'k.pem'\n"
    )
    assert load_settings(config).ingress is not None


#: An ingress that admits no one (so no pin is required) plus ``{extra}`` in [ingress].
_INGRESS = (
    "[ingress]\nidentity = 'id.agekey'\ntwin_names = []\n{extra}"
    "[ingress.tls]\ncert = 'c.pem'\nkey = 'k.pem'\n"
)
_CLIENT = "cert = 'c'\nkey = 'k'\nca = 'a'\npin_spki = ['{bad}']\n"


@pytest.mark.parametrize(
    "bad",
    [
        FINGERPRINT,  # a hex fingerprint pasted where a key pin belongs
        PIN.rstrip("="),  # padding dropped
        PIN[:-2] + "B=",  # stray bits: not the canonical spelling of any digest
        base64.b64encode(b"\0" * 20).decode(),  # a SHA-1 sized digest
        "sha1//" + PIN,
        "sha256/" + PIN,
        " " + PIN,
        "",
    ],
    ids=[
        "hex-fingerprint",
        "no-padding",
        "stray-bits",
        "20-bytes",
        "sha1",
        "one-slash",
        "blank",
        "empty",
    ],
)
@pytest.mark.parametrize(
    ("written", "where"),
    [
        (_INGRESS.replace("{extra}", "twin_spki = ['{bad}']\n"), "ingress.twin_spki"),
        ("[egress.upstream_tls]\n" + _CLIENT, "egress.upstream_tls.pin_spki"),
        (
            _INGRESS.replace("{extra}", "") + "[ingress.destination_tls]\n" + _CLIENT,
            "ingress.destination_tls.pin_spki",
        ),
    ],
    ids=["twin_spki", "upstream_tls", "destination_tls"],
)
def test_malformed_pins_stop_the_start_naming_file_and_key(
    tmp_path: Path, bad: str, written: str, where: str
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(written.replace("{bad}", bad))
    with pytest.raises(ConfigError, match=rf"gateway\.toml: {re.escape(where)}: .*public-key pins"):
        load_settings(config)


def test_upstream_pins_are_optional_and_canonical(tmp_path: Path) -> None:
    config = tmp_path / "hk.toml"
    tls = "[egress.upstream_tls]\ncert = 'c'\nkey = 'k'\nca = 'a'\n"
    config.write_text(tls)
    settings = load_settings(config)
    assert settings.egress is not None
    assert settings.egress.upstream_tls is not None
    assert settings.egress.upstream_tls.pin_spki == ()
    config.write_text(tls + f"pin_spki = ['sha256//{PIN}', '{PIN}']\n")
    settings = load_settings(config)
    assert settings.egress is not None
    assert settings.egress.upstream_tls is not None
    assert settings.egress.upstream_tls.pin_spki == (PIN, PIN)


def test_twin_spki_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A Kubernetes manifest may set the pin without a new config map.
    config = _ingress(tmp_path / "sz.toml", "")
    monkeypatch.setenv("GATEWAY_INGRESS__TWIN_SPKI", json.dumps(["sha256//" + PIN]))
    settings = load_settings(config)
    assert settings.ingress is not None
    assert settings.ingress.twin_spki == (PIN,)


def test_the_instance_names_what_each_replica_keeps_to_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "gw.toml"
    config.write_text(
        'witness_dir = "w/{instance}"\n'
        '[audit]\ndir = "a/{instance}/audit"\norigin = "park.example/audit/{instance}"\n'
        '[egress]\npolicy_dir = "p"\nspool_dir = "s/{instance}/egress"\n'
        'spool_identity = "k/spool.agekey"\n'
    )
    monkeypatch.delenv("GATEWAY_INSTANCE", raising=False)
    default = load_settings(config)
    assert default.instance  # the host name
    assert default.audit.origin == f"park.example/audit/{default.instance}"
    monkeypatch.setenv("GATEWAY_INSTANCE", "gw-1")
    settings = load_settings(config)
    assert settings.instance == "gw-1"
    assert settings.audit.dir == tmp_path / "a" / "gw-1" / "audit"
    assert settings.audit.origin == "park.example/audit/gw-1"
    assert settings.witness_dir == tmp_path / "w" / "gw-1"
    assert settings.egress is not None
    assert settings.egress.spool_dir == tmp_path / "s" / "gw-1" / "egress"
    # Not a per-replica setting: left as written.
    assert settings.egress.spool_identity == tmp_path / "k" / "spool.agekey"
    # From the environment too (the Kubernetes manifests set the origin there).
    monkeypatch.setenv("GATEWAY_AUDIT__ORIGIN", "k8s.example/{instance}")
    assert load_settings(config).audit.origin == "k8s.example/gw-1"
    monkeypatch.setenv("GATEWAY_INSTANCE", "../etc")
    with pytest.raises(ConfigError, match="is not a host-like name") as raised:
        load_settings(config)
    assert str(raised.value).startswith(f"{config}: instance: ")
