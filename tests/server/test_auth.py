"""Sender identities and the twin pin: only the twin gateway's certificate reaches the ingress.

The other park's CA signs the twin gateway's client certificate, and it may
sign its research senders' certificates too. These tests issue such a sender
certificate from the real HK dev CA and show that it is refused on every
ingress endpoint (envelopes, payloads, witnessing) while the twin is served.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.crypto.age import AgeEncryptor
from gateway.crypto.certs import ParkPaths, load_certificates
from gateway.crypto.tls import client_ssl_context
from gateway.errors import ConfigError
from gateway.server.config import load_settings
from tests.server.conftest import TWIN_NAME, Parks, start_parks

CLEAN = b"run_id,value\n" + b"".join(f"R{i:05d},{i % 97}\n".encode() for i in range(2000))


def _issue_client(pki: Path, park: str, common_name: str, out: Path) -> tuple[Path, Path]:
    """A client certificate from ``park``'s real dev CA with subject CN ``common_name``."""
    paths = ParkPaths(pki / park)
    ca_cert = load_certificates(paths.ca_cert)[0]
    ca_key: Any = serialization.load_pem_private_key(paths.ca_key.read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    out.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = out / f"{common_name}.crt", out / f"{common_name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _context(parks: Parks, cert: Path, key: Path) -> Any:
    return client_ssl_context(ca=ParkPaths(parks.pki / "sz").ca_cert, cert=cert, key=key)


def _twin(parks: Parks) -> tuple[Path, Path]:
    hk = ParkPaths(parks.pki / "hk")
    return hk.cert("client"), hk.key("client")


def _fingerprint(cert: Path) -> str:
    return load_certificates(cert)[0].fingerprint(hashes.SHA256()).hex(":").upper()


async def _post_envelope(parks: Parks, context: Any, name: str) -> tuple[int, str, Any]:
    encryptor = AgeEncryptor([parks.identity.recipient])
    envelope = encryptor.header() + encryptor.update(CLEAN) + encryptor.finish()
    url = f"{parks.sz.ingress_url}/v1/envelopes/sz-lab/{name}"
    async with parks.session.post(url, data=envelope, ssl=context) as r:
        return r.status, r.content_type, await r.json(content_type=None)


async def test_a_sender_certificate_of_the_twin_ca_is_refused_everywhere(
    tmp_path: Path, pki: Path
) -> None:
    async with start_parks(tmp_path, pki, witness=True) as parks:
        rogue = _context(parks, *_issue_client(pki, "hk", "hk-research", tmp_path / "rogue"))
        status, content_type, problem = await _post_envelope(parks, rogue, "bypass.csv")
        assert (status, content_type) == (403, "application/problem+json")
        assert "twin" in problem["detail"]
        tid = "t_" + os.urandom(16).hex()
        payload_url = f"{parks.sz.ingress_url}/v1/payloads/{tid}"
        async with parks.session.put(payload_url, data=b"ciphertext", ssl=rogue) as r:
            assert r.status == 403
            assert r.content_type == "application/problem+json"
        async with parks.session.delete(payload_url, ssl=rogue) as r:
            assert r.status == 403
        witness_url = f"{parks.sz.ingress_url}/v1/witness"
        async with parks.session.get(witness_url, ssl=rogue) as r:
            assert r.status == 403
        async with parks.session.post(witness_url, json={"note": "x"}, ssl=rogue) as r:
            assert r.status == 403
        # Nothing was delivered, spooled or recorded for the rogue sender.
        assert parks.inbox_files("sz-lab") == {}
        assert parks.partial_files() == []
        assert list((parks.root / "sz" / "spool").glob("*")) == []
        assert [r for r in parks.audit_events("sz") if r.get("kind") == "transfer"] == []
        # The pinned twin is served on the same listener.
        status, _, body = await _post_envelope(parks, _context(parks, *_twin(parks)), "ok.csv")
        assert status == 201, body
        assert parks.inbox_files("sz-lab") == {"ok.csv": CLEAN}
        async with parks.session.get(witness_url, ssl=_context(parks, *_twin(parks))) as r:
            assert r.status == 200


async def test_fingerprints_pin_the_exact_certificate(tmp_path: Path, pki: Path) -> None:
    # Same CN as the twin, from the same CA, but another certificate: refused
    # once fingerprints are configured; the twin's own certificate passes.
    impostor = _issue_client(pki, "hk", TWIN_NAME, tmp_path / "impostor")
    twin_cert = ParkPaths(pki / "hk").cert("client")
    ingress = {"twin_fingerprints": [_fingerprint(twin_cert)]}
    async with start_parks(tmp_path, pki, ingress=ingress) as parks:
        status, _, _ = await _post_envelope(parks, _context(parks, *impostor), "a.csv")
        assert status == 403
        assert parks.inbox_files("sz-lab") == {}
        status, _, body = await _post_envelope(parks, _context(parks, *_twin(parks)), "b.csv")
        assert status == 201, body


async def test_no_twin_names_refuses_every_peer(tmp_path: Path, pki: Path) -> None:
    async with start_parks(tmp_path, pki, ingress={"twin_names": []}) as parks:
        status, _, _ = await _post_envelope(parks, _context(parks, *_twin(parks)), "a.csv")
        assert status == 403
        assert parks.inbox_files("sz-lab") == {}


def _ingress_toml(path: Path, extra: str) -> Path:
    tls = "[ingress.tls]\ncert = 'c.pem'\nkey = 'k.pem'\n"
    path.write_text(f"[ingress]\nidentity = 'id.agekey'\n{extra}\n{tls}")
    return path


def test_twin_names_are_required_and_fingerprints_normalised(tmp_path: Path) -> None:
    config = tmp_path / "g.toml"
    with pytest.raises(ConfigError, match=r"g\.toml: ingress\.twin_names: Field required"):
        load_settings(_ingress_toml(config, ""))
    pinned = "twin_names = ['gw']\ntwin_fingerprints = ['" + "AB:" * 31 + "CD']"
    settings = load_settings(_ingress_toml(config, pinned))
    assert settings.ingress is not None
    assert settings.ingress.twin_names == ("gw",)
    assert settings.ingress.twin_fingerprints == ("ab" * 31 + "cd",)
    with pytest.raises(ConfigError, match=r"ingress\.twin_fingerprints"):
        load_settings(_ingress_toml(config, "twin_names = ['gw']\ntwin_fingerprints = ['ab']"))
    with pytest.raises(ConfigError, match=r"ingress\.twin_names"):
        load_settings(_ingress_toml(config, "twin_names = [' gw']"))
