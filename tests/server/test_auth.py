"""Sender identities, the twin pin, and who may read ``/metrics``.

The other park's CA signs the twin gateway's client certificate, and it may
sign its research senders' certificates too. These tests issue such a sender
certificate from the real HK dev CA and show that it is refused on every
ingress endpoint (envelopes, payloads, witnessing) while the twin is served.

``/metrics`` is read over real loopback connections to a running gateway; the
"non-loopback peer" half of the rule is tested on the peer-address check
itself, since these tests may only use loopback addresses.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from prometheus_client.parser import text_string_to_metric_families

from gateway.crypto.age import AgeEncryptor
from gateway.crypto.certs import ParkPaths, load_certificates
from gateway.crypto.keys import X25519Identity
from gateway.crypto.tls import client_ssl_context
from gateway.errors import ConfigError
from gateway.server.auth import digest_listed, is_loopback_peer
from gateway.server.config import GatewaySettings, load_settings, token_digest
from gateway.server.runner import running
from tests.server.conftest import (
    RESEARCH_TOKEN,
    TWIN_NAME,
    Parks,
    hk_settings,
    start_parks,
    write_policy,
)

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


METRICS_TOKEN = "tok-metrics-scraper-0123456789"
#: Never contacted: the metrics tests send no transfer, but the policy needs routes.
UNUSED_URL = "https://127.0.0.1:9"
PROBLEM = "application/problem+json"


def _metrics_settings(root: Path, pki: Path, metrics_tokens: tuple[str, ...]) -> GatewaySettings:
    """The HK egress of the two-park tests alone, with ``metrics_tokens`` set."""
    write_policy(
        root / "policies", UNUSED_URL, X25519Identity.generate().recipient.encode(), UNUSED_URL
    )
    base = hk_settings(root, pki, root / "policies").model_dump()
    return GatewaySettings(**{**base, "metrics_tokens": metrics_tokens})


async def _get_metrics(url: str, headers: dict[str, str]) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as r:
        return r.status, r.content_type, await r.text()


def _families(exposition: str) -> set[str]:
    return {family.name for family in text_string_to_metric_families(exposition)}


async def test_metrics_tokens_admit_only_a_listed_bearer_token(tmp_path: Path, pki: Path) -> None:
    settings = _metrics_settings(tmp_path, pki, (token_digest(METRICS_TOKEN),))
    async with running(settings, drain_seconds=1) as gateway:
        url = f"{gateway.egress_url}/metrics"
        # From loopback too: with tokens configured, the address opens nothing.
        status, content_type, body = await _get_metrics(url, {})
        assert (status, content_type) == (401, PROBLEM), body
        assert "metrics_tokens" in body
        async with aiohttp.ClientSession() as session, session.get(url) as r:
            assert r.headers["WWW-Authenticate"] == 'Bearer realm="hksz-gateway"'
        status, content_type, _ = await _get_metrics(url, {"Authorization": "Basic b3BzOm9wcw=="})
        assert (status, content_type) == (401, PROBLEM)
        for wrong in ("tok-metrics-scraper-012345678", RESEARCH_TOKEN, METRICS_TOKEN.upper()):
            status, content_type, _ = await _get_metrics(url, {"Authorization": f"Bearer {wrong}"})
            assert (status, content_type) == (403, PROBLEM), wrong
        # A client cannot claim to be local: only the transport's peer counts.
        spoofed = {"X-Forwarded-For": "127.0.0.1", "X-Real-IP": "127.0.0.1"}
        status, _, _ = await _get_metrics(url, spoofed)
        assert status == 401
        status, content_type, body = await _get_metrics(
            url, {"Authorization": f"bearer {METRICS_TOKEN}"}
        )
        assert (status, content_type) == (200, "text/plain"), body
        assert {"gateway_policy_info", "gateway_transfers"} <= _families(body)


async def test_metrics_without_tokens_answer_a_loopback_peer(tmp_path: Path, pki: Path) -> None:
    async with running(_metrics_settings(tmp_path, pki, ()), drain_seconds=1) as gateway:
        status, content_type, body = await _get_metrics(f"{gateway.egress_url}/metrics", {})
        assert (status, content_type) == (200, "text/plain"), body
        assert "gateway_policy_info" in _families(body)


@pytest.mark.parametrize(
    ("peername", "loopback"),
    [
        (("127.0.0.1", 40000), True),
        (("127.255.3.9", 40000), True),  # all of 127.0.0.0/8
        (("::1", 40000, 0, 0), True),
        (("::ffff:127.0.0.1", 40000, 0, 0), True),  # IPv4 client of a dual-stack listener
        (("::ffff:127.8.0.2", 40000, 0, 0), True),
        (("10.0.0.7", 40000), False),
        (("192.168.1.20", 40000), False),
        (("128.0.0.1", 40000), False),
        (("0.0.0.0", 40000), False),
        (("::", 40000, 0, 0), False),
        (("::ffff:10.0.0.7", 40000, 0, 0), False),
        (("::ffff:0:127.0.0.1", 40000, 0, 0), False),  # IPv4-translated, not mapped
        (("2001:db8::1", 40000, 0, 0), False),
        (("fe80::1%lo", 40000, 0, 0), False),
        (("localhost", 40000), False),  # a name is not an address
        (None, False),  # no transport
        ("", False),  # a Unix socket peer
        ((), False),
        ((0x7F000001, 40000), False),
    ],
)
def test_loopback_peers_are_127_slash_8_and_ipv6_loopback_only(
    peername: object, loopback: bool
) -> None:
    assert is_loopback_peer(peername) is loopback


def test_a_token_is_listed_when_its_digest_is_any_of_the_configured_ones() -> None:
    digests = [token_digest("first"), token_digest("second"), token_digest("third")]
    assert all(digest_listed(token, digests) for token in ("first", "second", "third"))
    assert not digest_listed("fourth", digests)
    assert not digest_listed("first ", digests)
    assert not digest_listed("first", [])
