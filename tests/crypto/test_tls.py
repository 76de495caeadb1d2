"""Real TLS handshakes on 127.0.0.1 with the dev PKI: mutual TLS accepted and refused."""

from __future__ import annotations

import socket
import ssl
import threading
from pathlib import Path

import pytest

from gateway.crypto.certs import init_dev_pki, load_certificates, spki_pin
from gateway.crypto.tls import SpkiPinMismatch, client_ssl_context, server_ssl_context
from gateway.errors import ConfigError

TIMEOUT = 10.0


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pki")
    init_dev_pki(root)
    return root


class OneShotServer:
    """Accept one TLS connection, record the peer's CN or the error, echo a greeting."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(TIMEOUT)
        self.port = self.listener.getsockname()[1]
        self.context = context
        self.peer_cn: str | None = None
        self.error: Exception | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
            with self.context.wrap_socket(conn, server_side=True) as tls:
                cert = tls.getpeercert()
                if cert:
                    names = [rdn[0] for rdn in cert["subject"]]
                    self.peer_cn = next(str(n[1]) for n in names if n[0] == "commonName")
                tls.sendall(b"hello")
        except (ssl.SSLError, OSError) as exc:
            self.error = exc
        finally:
            self.listener.close()

    def join(self) -> None:
        self.thread.join(TIMEOUT)


def _talk(port: int, context: ssl.SSLContext, host: str = "127.0.0.1") -> bytes:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        return tls.recv(5)


def _ingress(pki: Path, park: str = "sz", trust: str = "hk") -> ssl.SSLContext:
    return server_ssl_context(
        pki / park / "server.crt",
        pki / park / "server.key",
        client_ca=pki / trust / "ca.crt",
        require_client_cert=True,
    )


def test_mutual_tls_between_parks_succeeds(pki: Path) -> None:
    server = OneShotServer(_ingress(pki))
    client = client_ssl_context(
        ca=pki / "sz" / "ca.crt", cert=pki / "hk" / "client.crt", key=pki / "hk" / "client.key"
    )
    assert _talk(server.port, client) == b"hello"
    server.join()
    assert server.error is None
    assert server.peer_cn == "gateway-hk"


def test_localhost_name_verifies_too(pki: Path) -> None:
    server = OneShotServer(_ingress(pki))
    client = client_ssl_context(
        ca=pki / "sz" / "ca.crt", cert=pki / "hk" / "client.crt", key=pki / "hk" / "client.key"
    )
    assert _talk(server.port, client, "localhost") == b"hello"
    server.join()


def test_client_cert_from_the_wrong_ca_is_refused(pki: Path) -> None:
    # The SZ ingress trusts only the HK CA; a client certificate issued by the SZ CA fails.
    server = OneShotServer(_ingress(pki))
    client = client_ssl_context(
        ca=pki / "sz" / "ca.crt", cert=pki / "sz" / "client.crt", key=pki / "sz" / "client.key"
    )
    with pytest.raises((ssl.SSLError, ConnectionError)):
        _talk(server.port, client)
    server.join()
    assert isinstance(server.error, ssl.SSLError)
    assert "certificate verify failed" in str(server.error)


def test_no_client_cert_is_refused_when_required(pki: Path) -> None:
    server = OneShotServer(_ingress(pki))
    client = client_ssl_context(ca=pki / "sz" / "ca.crt")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        _talk(server.port, client)
    server.join()
    assert isinstance(server.error, ssl.SSLError)


def test_client_refuses_a_server_from_an_untrusted_ca(pki: Path) -> None:
    server = OneShotServer(_ingress(pki))
    client = client_ssl_context(
        ca=pki / "hk" / "ca.crt", cert=pki / "hk" / "client.crt", key=pki / "hk" / "client.key"
    )
    with pytest.raises(ssl.SSLCertVerificationError):
        _talk(server.port, client)
    server.join()


def test_optional_client_cert(pki: Path) -> None:
    context = server_ssl_context(
        pki / "hk" / "server.crt", pki / "hk" / "server.key", client_ca=pki / "sz" / "ca.crt"
    )
    server = OneShotServer(context)
    assert _talk(server.port, client_ssl_context(ca=pki / "hk" / "ca.crt")) == b"hello"
    server.join()
    assert server.error is None
    assert server.peer_cn is None


def test_context_errors_name_the_file(pki: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope.crt: no such file"):
        server_ssl_context(tmp_path / "nope.crt", pki / "hk" / "server.key")
    with pytest.raises(ConfigError, match=r"server.crt: cannot load"):
        server_ssl_context(pki / "hk" / "server.crt", pki / "sz" / "server.key")
    bad_ca = tmp_path / "ca.pem"
    bad_ca.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"ca.pem: not a PEM CA bundle"):
        client_ssl_context(ca=bad_ca)
    with pytest.raises(ConfigError, match="client_ca"):
        server_ssl_context(
            pki / "hk" / "server.crt", pki / "hk" / "server.key", require_client_cert=True
        )
    with pytest.raises(ConfigError, match="both cert and key"):
        client_ssl_context(cert=pki / "hk" / "client.crt")


def _pin(path: Path) -> str:
    return spki_pin(load_certificates(path)[0])


def test_pinned_context_holds_a_blocking_socket_to_the_pin(pki: Path) -> None:
    # The pin lives in the context (sslsocket_class), not in the HTTP client:
    # a plain socket wrapped with it, as a script or health check would, is
    # refused by wrap_socket, so the caller never holds a socket to write to.
    mutual = {"cert": pki / "hk" / "client.crt", "key": pki / "hk" / "client.key"}
    server = OneShotServer(_ingress(pki))
    other_key = _pin(pki / "hk" / "server.crt")  # right format, not the SZ server's key
    wrong = client_ssl_context(ca=pki / "sz" / "ca.crt", pin_spki=[other_key], **mutual)
    with pytest.raises(SpkiPinMismatch, match=r"127\.0\.0\.1: .*not a pinned one") as caught:
        _talk(server.port, wrong)
    assert isinstance(caught.value, ssl.SSLCertVerificationError)
    assert caught.value.presented == _pin(pki / "sz" / "server.crt")
    server.join()
    # Listing the server's key (beside another, as while rotating) lets it through.
    server = OneShotServer(_ingress(pki))
    right = client_ssl_context(
        ca=pki / "sz" / "ca.crt", pin_spki=[other_key, _pin(pki / "sz" / "server.crt")], **mutual
    )
    assert _talk(server.port, right) == b"hello"
    server.join()
    assert server.error is None


def test_pins_add_to_verification_never_replace_it(pki: Path) -> None:
    # The server's own key pinned, but the CA bundle is the wrong park's: refused
    # by ordinary verification first, as without a pin.
    server = OneShotServer(_ingress(pki))
    client = client_ssl_context(
        ca=pki / "hk" / "ca.crt",
        cert=pki / "hk" / "client.crt",
        key=pki / "hk" / "client.key",
        pin_spki=[_pin(pki / "sz" / "server.crt")],
    )
    with pytest.raises(ssl.SSLCertVerificationError) as caught:
        _talk(server.port, client)
    assert not isinstance(caught.value, SpkiPinMismatch)
    server.join()
