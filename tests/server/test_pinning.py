"""The twins pin each other by public key, not by name (issue 11, finding 8).

A park's CA may issue a certificate under the twin's name for another key (by
mistake, or to whoever got hold of the CA). Such a certificate verifies and
names the twin, so everything here is built from the real dev CAs: the
"mis-issued" certificates have the same issuer, subject, SANs and usages as the
real leaves, only their key differs.

- The ingress refuses a mis-issued *client* certificate (403, nothing spooled,
  delivered or recorded) and serves the real twin.
- The egress refuses a mis-issued *server* certificate in the TLS handshake. A
  raw TLS server on loopback shows that not one byte of the request (for an
  envelope: not the age header) reached it, while the same server with its key
  pinned does receive the request: the check is what stops the bytes.
- The same holds for the ingress's ``https://`` destinations.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from structlog.testing import capture_logs

from gateway.crypto.age import AgeEncryptor
from gateway.crypto.certs import ParkPaths, load_certificates, spki_pin
from gateway.crypto.tls import client_ssl_context, server_ssl_context
from gateway.server.app import reload_policy
from gateway.server.runner import warn_unpinned
from tests.server.conftest import Parks, hk_settings, start_parks, write_policy

CLEAN = b"run_id,value\n" + b"".join(f"R{i:05d},{i % 97}\n".encode() for i in range(2000))
#: Above the egress's PIPELINE_MIN_BYTES (256 KiB): the payload would stream to
#: the twin while classified, and the age header would follow the verdict.
LARGE = CLEAN * 40
#: Seconds the raw server waits for a handshake or the first request bytes.
TIMEOUT = 10.0
#: How often the raw server's accept loop looks whether it should stop.
ACCEPT_POLL_SECONDS = 0.1
PROBLEM = "application/problem+json"


def mis_issue(pki: Path, park: str, role: str, out: Path) -> tuple[Path, Path]:
    """A twin of ``<park>/<role>.crt`` from the same CA with a new key: only the key differs.

    Subject, SANs, key and extended key usages, validity and issuer are the
    real leaf's; the subject key identifier follows the new key.
    """
    paths = ParkPaths(pki / park)
    real = load_certificates(paths.cert(role))[0]
    ca_cert = load_certificates(paths.ca_cert)[0]
    ca_key: Any = serialization.load_pem_private_key(paths.ca_key.read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(real.subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(real.not_valid_before_utc)
        .not_valid_after(real.not_valid_after_utc)
    )
    for extension in real.extensions:
        value = extension.value
        if isinstance(value, x509.SubjectKeyIdentifier):
            value = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        builder = builder.add_extension(value, critical=extension.critical)
    cert = builder.sign(ca_key, hashes.SHA256())
    assert cert.subject == real.subject
    assert cert.issuer == real.issuer
    assert spki_pin(cert) != spki_pin(real)
    out.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = out / f"{park}-{role}.crt", out / f"{park}-{role}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def pin_of(cert: Path) -> str:
    return spki_pin(load_certificates(cert)[0])


# --- the ingress pins the twin's client key -------------------------------------------


async def _post_envelope(parks: Parks, cert: Path, key: Path, name: str) -> tuple[int, str]:
    """POST an envelope to the SZ ingress as the holder of ``cert``/``key``."""
    context = client_ssl_context(ca=ParkPaths(parks.pki / "sz").ca_cert, cert=cert, key=key)
    encryptor = AgeEncryptor([parks.identity.recipient])
    envelope = encryptor.header() + encryptor.update(CLEAN) + encryptor.finish()
    url = f"{parks.sz.ingress_url}/v1/envelopes/sz-lab/{name}"
    async with parks.session.post(url, data=envelope, ssl=context) as response:
        await response.read()
        return response.status, response.content_type


async def test_a_mis_issued_twin_client_certificate_is_refused(tmp_path: Path, pki: Path) -> None:
    impostor = mis_issue(pki, "hk", "client", tmp_path / "impostor")
    hk = ParkPaths(pki / "hk")
    async with start_parks(tmp_path, pki) as parks:
        with capture_logs() as logs:
            status, content_type = await _post_envelope(parks, *impostor, "bypass.csv")
        assert (status, content_type) == (403, PROBLEM)
        # Nothing was spooled, delivered or recorded for the impostor.
        assert parks.inbox_files("sz-lab") == {}
        assert parks.partial_files() == []
        assert list((parks.root / "sz" / "spool").glob("*")) == []
        assert [r for r in parks.audit_events("sz") if r.get("kind") == "transfer"] == []
        # One warning names what did not match and the key that was presented,
        # public values only: no envelope or file name bytes.
        refused = [e for e in logs if e["event"] == "twin_pin_refused"]
        assert refused == [
            {
                "event": "twin_pin_refused",
                "log_level": "warning",
                "peer": "gateway-hk",
                "mismatch": "key",
                "spki": pin_of(impostor[0]),
            }
        ]
        # The real twin, same name and CA, is served on the same listener.
        status, _ = await _post_envelope(parks, hk.cert("client"), hk.key("client"), "ok.csv")
        assert status == 201
        assert parks.inbox_files("sz-lab") == {"ok.csv": CLEAN}


async def test_the_twin_served_first_does_not_vouch_for_an_impostor_of_its_name(
    tmp_path: Path, pki: Path
) -> None:
    """The checked certificate is remembered by its exact DER: the twin's earlier
    requests say nothing about another key under the same name."""
    impostor = mis_issue(pki, "hk", "client", tmp_path / "impostor")
    hk = ParkPaths(pki / "hk")
    async with start_parks(tmp_path, pki) as parks:
        for name in ("a.csv", "b.csv"):
            status, _ = await _post_envelope(parks, hk.cert("client"), hk.key("client"), name)
            assert status == 201
        status, content_type = await _post_envelope(parks, *impostor, "bypass.csv")
        assert (status, content_type) == (403, PROBLEM)
        status, _ = await _post_envelope(parks, hk.cert("client"), hk.key("client"), "c.csv")
        assert status == 201
        assert sorted(parks.inbox_files("sz-lab")) == ["a.csv", "b.csv", "c.csv"]


async def test_old_and_new_twin_keys_are_both_accepted_while_rotating(
    tmp_path: Path, pki: Path
) -> None:
    new = mis_issue(pki, "hk", "client", tmp_path / "renewed")
    hk = ParkPaths(pki / "hk")
    ingress = {"twin_spki": [pin_of(hk.cert("client")), "sha256//" + pin_of(new[0])]}
    async with start_parks(tmp_path, pki, ingress=ingress) as parks:
        assert (await _post_envelope(parks, *new, "new.csv"))[0] == 201
        old = await _post_envelope(parks, hk.cert("client"), hk.key("client"), "old.csv")
        assert old[0] == 201
        assert set(parks.inbox_files("sz-lab")) == {"new.csv", "old.csv"}


# --- the egress pins the ingress's server key -----------------------------------------


class RawTlsServer:
    """A TLS server on loopback that keeps every application byte it receives.

    Blocking sockets in threads, so nothing in it depends on the event loop
    the gateway runs on: it accepts TCP and counts the connection, runs the
    TLS handshake (no client certificate asked), then keeps what the first
    read returns and closes. It never answers HTTP: all it shows is whether
    request bytes reached it.
    """

    def __init__(self, cert: Path, key: Path) -> None:
        self.context = server_ssl_context(cert, key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(ACCEPT_POLL_SECONDS)
        self.url = f"https://127.0.0.1:{self.listener.getsockname()[1]}"
        self.accepted = 0
        self.received = bytearray()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._connections: list[threading.Thread] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._one, args=(conn,), daemon=True)
            with self._lock:
                self.accepted += 1
                self._connections.append(thread)
            thread.start()

    def _one(self, conn: socket.socket) -> None:
        conn.settimeout(TIMEOUT)
        try:
            with self.context.wrap_socket(conn, server_side=True) as tls:
                data = tls.recv(1 << 16)
            with self._lock:
                self.received += data
        except OSError:
            pass  # the client gave up in (or right after) the handshake
        finally:
            conn.close()

    def close(self) -> None:
        """Stop accepting and wait for every connection: then :attr:`received` is final."""
        self._stop.set()
        self._thread.join(TIMEOUT)
        self.listener.close()
        for thread in self._connections:
            thread.join(TIMEOUT)


@contextlib.asynccontextmanager
async def raw_tls_server(cert: Path, key: Path) -> AsyncIterator[RawTlsServer]:
    server = RawTlsServer(cert, key)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.close)


async def _route_to(parks: Parks, twin_url: str) -> None:
    """Point every envelope route of the HK egress at ``twin_url``."""
    assert parks.hk.egress_app is not None
    write_policy(
        parks.root / "policies", twin_url, parks.identity.recipient.encode(), parks.recorder.url
    )
    await reload_policy(parks.hk.egress_app)


@pytest.mark.parametrize(
    ("data", "connections"),
    # Pipelined: the payload upload is refused, then the whole envelope.
    [(CLEAN, 1), (LARGE, 2)],
    ids=["envelope", "pipelined"],
)
async def test_a_twin_with_a_mis_issued_server_key_gets_no_byte(
    tmp_path: Path, pki: Path, data: bytes, connections: int
) -> None:
    impostor = mis_issue(pki, "sz", "server", tmp_path / "impostor")
    async with (
        raw_tls_server(*impostor) as twin,
        start_parks(tmp_path, pki) as parks,
    ):
        await _route_to(parks, twin.url)
        with capture_logs() as logs:
            status, body = await parks.put("sz-lab", "x.csv", data)
        assert status == 502, body
        assert body["type"].endswith("/upstream-error")
        assert f"sha256//{pin_of(impostor[0])}" in body["detail"]
        assert parks.events_of(body["transfer_id"])[-1] == "failed"
        assert "delivered" not in parks.events_of(body["transfer_id"])
        # Each refused connection logs the key it was offered (a public value).
        refused = {(e["server"], e["spki"]) for e in logs if e["event"] == "upstream_pin_refused"}
        assert refused == {("127.0.0.1", pin_of(impostor[0]))}
    # The egress reached it, and it got not one byte of any request (its
    # connections are all closed now, so nothing is still on its way).
    assert twin.accepted >= connections
    assert bytes(twin.received) == b""


async def test_the_same_server_with_its_key_pinned_receives_the_request(
    tmp_path: Path, pki: Path
) -> None:
    # The control for the test above: pin the stand-in's key too (as while a
    # rotation lists old and new) and the request bytes do reach it.
    impostor = mis_issue(pki, "sz", "server", tmp_path / "impostor")
    hk, sz = ParkPaths(pki / "hk"), ParkPaths(pki / "sz")
    upstream_tls = {
        "cert": hk.cert("client"),
        "key": hk.key("client"),
        "ca": sz.ca_cert,
        "pin_spki": [pin_of(sz.cert("server")), pin_of(impostor[0])],
    }
    async with (
        raw_tls_server(*impostor) as twin,
        start_parks(tmp_path, pki, egress={"upstream_tls": upstream_tls}) as parks,
    ):
        await _route_to(parks, twin.url)
        status, _ = await parks.put("sz-lab", "x.csv", CLEAN)
        assert status == 502  # it closes without answering
    assert bytes(twin.received).startswith(b"POST /v1/envelopes/sz-lab/")


# --- the ingress pins its https:// destinations ---------------------------------------


async def test_a_destination_with_a_mis_issued_key_gets_no_byte(tmp_path: Path, pki: Path) -> None:
    impostor = mis_issue(pki, "sz", "server", tmp_path / "impostor")
    sz = ParkPaths(pki / "sz")
    async with raw_tls_server(*impostor) as destination:
        ingress = {
            "deliver": {"sz-https": destination.url + "/https"},
            "destination_tls": {
                "cert": sz.cert("client"),
                "key": sz.key("client"),
                "ca": sz.ca_cert,
                "pin_spki": [pin_of(sz.cert("server"))],
            },
        }
        async with start_parks(tmp_path, pki, ingress=ingress) as parks:
            status, body = await parks.put("sz-https", "x.csv", CLEAN)
            assert status == 502, body
            assert parks.events_of(body["transfer_id"], "sz") == ["failed"]
    assert destination.accepted >= 1
    assert bytes(destination.received) == b""


def test_an_unpinned_upstream_is_warned_about_at_start(tmp_path: Path, pki: Path) -> None:
    pinned = hk_settings(tmp_path, pki, tmp_path / "policies")
    assert pinned.egress is not None
    assert pinned.egress.upstream_tls is not None
    tls = pinned.egress.upstream_tls.model_copy(update={"pin_spki": ()})
    unpinned = pinned.model_copy(
        update={"egress": pinned.egress.model_copy(update={"upstream_tls": tls})}
    )
    with capture_logs() as logs:
        warn_unpinned(unpinned)
        warn_unpinned(pinned)
    warnings = [e for e in logs if e["event"] == "upstream_unpinned"]
    assert [e["setting"] for e in warnings] == ["egress.upstream_tls"]
