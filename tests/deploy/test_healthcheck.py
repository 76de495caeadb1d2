"""deploy/healthcheck.py, the container HEALTHCHECK, against real HTTP(S) servers on loopback."""

from __future__ import annotations

import datetime
import http.server
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.deploy.tools import DEPLOY

HEALTHCHECK = DEPLOY / "healthcheck.py"
#: The script's own timeout is 4 s; a refused connection answers at once.
RUN_TIMEOUT_SECONDS = 30


class _Handler(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return


def _serve(status: int, context: ssl.SSLContext | None = None) -> Iterator[str]:
    handler = type("Handler", (_Handler,), {"status": status})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    scheme = "http"
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{scheme}://127.0.0.1:{server.server_address[1]}/healthz"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def healthy() -> Iterator[str]:
    yield from _serve(200)


@pytest.fixture
def unhealthy() -> Iterator[str]:
    yield from _serve(503)


@pytest.fixture
def healthy_tls(tmp_path: Path) -> Iterator[str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gateway.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    yield from _serve(200, context)


def _check(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK)],
        env={"GATEWAY_HEALTH_URL": url},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_SECONDS,
        check=False,
    )


def test_healthy_gateway_passes(healthy: str) -> None:
    assert _check(healthy).returncode == 0


def test_self_signed_tls_listener_passes(healthy_tls: str) -> None:
    # Liveness is "the process serves", not "the certificate is trusted here".
    assert _check(healthy_tls).returncode == 0


def test_unhealthy_status_fails(unhealthy: str) -> None:
    result = _check(unhealthy)
    assert result.returncode == 1
    assert "503" in result.stderr


def test_nothing_listening_fails_with_one_line() -> None:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
    port = server.server_address[1]
    server.server_close()
    result = _check(f"http://127.0.0.1:{port}/healthz")
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_non_http_url_is_refused() -> None:
    result = _check("file:///etc/passwd")
    assert result.returncode == 1
    assert "must be http(s)://" in result.stderr


def test_dockerfile_healthcheck_runs_this_script() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    assert "COPY deploy/healthcheck.py /usr/local/bin/gateway-healthcheck" in dockerfile
    assert 'CMD ["python", "/usr/local/bin/gateway-healthcheck"]' in dockerfile
