"""The dev PKI: layout, key modes, chains, idempotence, --force, descriptions."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import shutil
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway.crypto.certs import (
    CA_VALIDITY,
    LEAF_VALIDITY,
    PARKS,
    PIN_PREFIX,
    PINS_FILE_NAME,
    ParkPaths,
    describe_certificate,
    init_dev_pki,
    load_certificates,
    parse_pin,
    spki_pin,
)
from gateway.errors import ConfigError

NOW = dt.datetime(2026, 11, 25, 8, 0, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pki")
    init_dev_pki(root, now=NOW)
    return root


def _cert(path: Path) -> x509.Certificate:
    return load_certificates(path)[0]


def test_layout_and_private_key_modes(pki: Path) -> None:
    for park in PARKS:
        paths = ParkPaths(pki / park)
        for role in ("server", "client"):
            assert paths.cert(role).is_file()
            assert stat.S_IMODE(paths.key(role).stat().st_mode) == 0o600
        assert stat.S_IMODE(paths.ca_key.stat().st_mode) == 0o600
        assert stat.S_IMODE(paths.audit_key.stat().st_mode) == 0o600
        assert stat.S_IMODE(paths.ca_cert.stat().st_mode) == 0o644
        assert stat.S_IMODE(paths.intercept_ca_key.stat().st_mode) == 0o600
        assert stat.S_IMODE(paths.intercept_ca_cert.stat().st_mode) == 0o644


def test_each_park_has_its_own_interception_ca_apart_from_its_dev_ca(pki: Path) -> None:
    for park in PARKS:
        paths = ParkPaths(pki / park)
        intercept = _cert(paths.intercept_ca_cert)
        assert intercept.subject.rfc4514_string() == (
            f"CN=hksz-gateway {park.upper()} interception CA,OU={park.upper()},"
            "O=hksz-gateway development"
        )
        assert intercept.not_valid_after_utc - NOW == CA_VALIDITY
        assert spki_pin(intercept) != spki_pin(_cert(paths.ca_cert))
    assert spki_pin(_cert(pki / "hk" / "intercept-ca.pem")) != spki_pin(
        _cert(pki / "sz" / "intercept-ca.pem")
    )


def test_chains_usages_and_sans(pki: Path) -> None:
    for park in PARKS:
        paths = ParkPaths(pki / park)
        ca = _cert(paths.ca_cert)
        ca_info = describe_certificate(ca)
        assert ca_info.is_ca
        assert ca_info.key_type == "ECDSA secp256r1"
        assert ca_info.not_after - NOW == CA_VALIDITY
        for role, usage in (
            ("server", ExtendedKeyUsageOID.SERVER_AUTH),
            ("client", ExtendedKeyUsageOID.CLIENT_AUTH),
        ):
            leaf = _cert(paths.cert(role))
            leaf.verify_directly_issued_by(ca)
            info = describe_certificate(leaf)
            assert not info.is_ca
            assert info.dns_names == ("localhost",)
            assert info.ip_addresses == ("127.0.0.1", "::1")
            assert info.not_after - NOW == LEAF_VALIDITY
            assert info.not_before < NOW
            assert f"CN=gateway-{park}" in info.subject
            eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            assert list(eku) == [usage]
    # The parks have distinct CAs: a HK leaf does not chain to the SZ CA.
    with pytest.raises((ValueError, TypeError)):
        _cert(pki / "hk" / "client.crt").verify_directly_issued_by(_cert(pki / "sz" / "ca.crt"))


def test_rerun_keeps_everything(pki: Path) -> None:
    before = {p: p.read_bytes() for p in pki.rglob("*") if p.is_file()}
    actions = init_dev_pki(pki, now=NOW + dt.timedelta(days=1))
    assert {a.action for a in actions} == {"kept"}
    assert {p: p.read_bytes() for p in pki.rglob("*") if p.is_file()} == before


def test_force_reissues_certificates_but_keeps_audit_keys(tmp_path: Path) -> None:
    init_dev_pki(tmp_path, now=NOW)
    audit = (tmp_path / "hk" / "audit-ed25519.key").read_bytes()
    intercept = (tmp_path / "hk" / "intercept-ca.pem").read_bytes()
    ca = (tmp_path / "hk" / "ca.crt").read_bytes()
    actions = init_dev_pki(tmp_path, force=True, now=NOW)
    # The audit key (signed history) and the interception CA (trusted on the
    # research users' machines) survive --force.
    kept = {"audit-ed25519.key", "intercept-ca.pem", "intercept-ca.key"}
    assert {a.action for a in actions if a.path.name not in kept} == {"replaced"}
    assert {a.action for a in actions if a.path.name in kept} == {"kept"}
    assert (tmp_path / "hk" / "ca.crt").read_bytes() != ca
    assert (tmp_path / "hk" / "audit-ed25519.key").read_bytes() == audit
    assert (tmp_path / "hk" / "intercept-ca.pem").read_bytes() == intercept
    _cert(tmp_path / "hk" / "server.crt").verify_directly_issued_by(
        _cert(tmp_path / "hk" / "ca.crt")
    )


def test_missing_leaf_is_reissued_from_the_existing_ca(tmp_path: Path) -> None:
    init_dev_pki(tmp_path, now=NOW)
    ca = (tmp_path / "sz" / "ca.crt").read_bytes()
    (tmp_path / "sz" / "server.key").unlink()
    actions = {a.path.name + "@" + a.path.parent.name: a.action for a in init_dev_pki(tmp_path)}
    assert actions["server.key@sz"] == "replaced"
    assert actions["ca.crt@sz"] == "kept"
    assert (tmp_path / "sz" / "ca.crt").read_bytes() == ca
    _cert(tmp_path / "sz" / "server.crt").verify_directly_issued_by(
        _cert(tmp_path / "sz" / "ca.crt")
    )


def test_half_a_ca_is_an_error_not_a_silent_new_ca(tmp_path: Path) -> None:
    init_dev_pki(tmp_path, now=NOW)
    (tmp_path / "hk" / "ca.key").unlink()
    with pytest.raises(ConfigError, match=r"ca.key: missing"):
        init_dev_pki(tmp_path)


def test_mismatched_ca_key_is_an_error(tmp_path: Path) -> None:
    init_dev_pki(tmp_path, now=NOW)
    (tmp_path / "hk" / "ca.key").write_bytes((tmp_path / "sz" / "ca.key").read_bytes())
    with pytest.raises(ConfigError, match="does not match"):
        init_dev_pki(tmp_path)


def test_seconds_to_expiry(pki: Path) -> None:
    info = describe_certificate(load_certificates(pki / "hk" / "server.crt")[0])
    assert info.seconds_to_expiry(NOW) == LEAF_VALIDITY.total_seconds()
    late = NOW + LEAF_VALIDITY + dt.timedelta(days=1)
    assert info.seconds_to_expiry(late) == -86400


def test_load_certificates_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.crt"
    bad.write_text("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    with pytest.raises(ConfigError, match=r"bad.crt: not a PEM"):
        load_certificates(bad)
    with pytest.raises(ConfigError, match=r"missing.crt: cannot read"):
        load_certificates(tmp_path / "missing.crt")


def test_fingerprint_format(pki: Path) -> None:
    info = describe_certificate(_cert(pki / "hk" / "ca.crt"))
    parts = info.sha256_fingerprint.split(":")
    assert len(parts) == 32
    assert all(len(p) == 2 and p == p.upper() for p in parts)


def _openssl_pin(path: Path) -> str:
    """curl's documented recipe for a ``--pinnedpubkey sha256//`` value, run with openssl."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    pem = subprocess.run(
        [openssl, "x509", "-in", str(path), "-pubkey", "-noout"], capture_output=True, check=True
    ).stdout
    der = subprocess.run(
        [openssl, "pkey", "-pubin", "-outform", "der"], input=pem, capture_output=True, check=True
    ).stdout
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def test_spki_pin_is_what_openssl_and_curl_compute(pki: Path) -> None:
    for park in PARKS:
        for name in ("ca.crt", "server.crt", "client.crt"):
            cert = _cert(pki / park / name)
            pin = spki_pin(cert)
            assert pin == _openssl_pin(pki / park / name)
            # The same from the DER a TLS peer sends, and in describe_certificate.
            assert spki_pin(cert.public_bytes(serialization.Encoding.DER)) == pin
            assert describe_certificate(cert).spki_sha256 == pin
            assert parse_pin(pin) == pin
            assert parse_pin(PIN_PREFIX + pin) == pin
    # One pin per key: a park's server and client keys differ.
    assert spki_pin(_cert(pki / "hk" / "server.crt")) != spki_pin(_cert(pki / "hk" / "client.crt"))


@pytest.mark.parametrize("bad", ["", "sha256//", "AAAA", "A" * 43, "A" * 42 + "B=", "%" * 44])
def test_parse_pin_refuses_anything_but_a_sha256_pin(bad: str) -> None:
    with pytest.raises(ValueError, match="public-key pins") as caught:
        parse_pin(bad)
    if len(bad) > len(PIN_PREFIX):
        assert bad not in str(caught.value)  # never echoes what was pasted


def test_pins_file_lists_every_leaf_and_follows_reissue(tmp_path: Path) -> None:
    init_dev_pki(tmp_path, now=NOW)
    pins = tomllib.loads((tmp_path / PINS_FILE_NAME).read_text())
    for park in PARKS:
        for role in ("server", "client"):
            assert pins[park][role] == spki_pin(_cert(tmp_path / park / f"{role}.crt"))
    assert stat.S_IMODE((tmp_path / PINS_FILE_NAME).stat().st_mode) == 0o644
    # Re-issued keys, new pins: the file follows.
    actions = {a.path.name: a.action for a in init_dev_pki(tmp_path, force=True, now=NOW)}
    assert actions[PINS_FILE_NAME] == "replaced"
    again = tomllib.loads((tmp_path / PINS_FILE_NAME).read_text())
    assert again["hk"]["client"] == spki_pin(_cert(tmp_path / "hk" / "client.crt"))
    assert again["hk"]["client"] != pins["hk"]["client"]
