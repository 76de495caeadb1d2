"""``ssl.SSLContext`` builders for the gateway's TLS and mutual-TLS hops (SPEC §6).

The server side presents its certificate and, for the ingress and for
senders identified by client certificate, verifies client certificates
against a CA bundle (the *other* park's CA between the twins). The client
side verifies the server against a given CA bundle, or the system trust
store for public HTTPS destinations, and presents a client certificate for
mutual TLS. Problems with the files are reported as one-line
:class:`~gateway.errors.ConfigError`\\ s naming the file.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from gateway.errors import ConfigError

#: TLS 1.2 is the floor: TLS 1.0/1.1 are deprecated by RFC 8996.
MINIMUM_TLS_VERSION = ssl.TLSVersion.TLSv1_2


def server_ssl_context(
    cert: Path | str,
    key: Path | str,
    *,
    client_ca: Path | str | None = None,
    require_client_cert: bool = False,
) -> ssl.SSLContext:
    """A server context presenting ``cert``/``key``.

    Args:
        cert: PEM certificate chain (leaf first).
        key: PEM private key of the leaf.
        client_ca: CA bundle that client certificates must chain to; without
            it no client certificate is requested.
        require_client_cert: refuse handshakes without a valid client
            certificate (mutual TLS); otherwise one is optional but, when
            sent, must verify.

    Raises:
        ConfigError: a file is missing or invalid, or a client certificate
            is required without a CA to verify it.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_TLS_VERSION
    _load_chain(context, cert, key)
    if client_ca is not None:
        _load_ca(context, client_ca)
        context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    elif require_client_cert:
        raise ConfigError("require_client_cert needs a client_ca bundle to verify clients against")
    return context


def client_ssl_context(
    *,
    ca: Path | str | None = None,
    cert: Path | str | None = None,
    key: Path | str | None = None,
) -> ssl.SSLContext:
    """A client context that verifies the server and optionally presents a certificate.

    Args:
        ca: CA bundle the server must chain to; the system trust store when omitted.
        cert: PEM client certificate for mutual TLS (needs ``key``).
        key: PEM private key of ``cert``.

    Raises:
        ConfigError: a file is missing or invalid, or only one of cert/key is given.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname and CERT_REQUIRED on
    context.minimum_version = MINIMUM_TLS_VERSION
    if ca is not None:
        _load_ca(context, ca)
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if (cert is None) != (key is None):
        raise ConfigError("a client certificate needs both cert and key")
    if cert is not None and key is not None:
        _load_chain(context, cert, key)
    return context


def _require_file(path: Path | str) -> None:
    if not Path(path).is_file():
        raise ConfigError(f"{path}: no such file")


def _load_chain(context: ssl.SSLContext, cert: Path | str, key: Path | str) -> None:
    _require_file(cert)
    _require_file(key)
    try:
        context.load_cert_chain(certfile=str(cert), keyfile=str(key))
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc.__class__.__name__
        raise ConfigError(
            f"{cert}: cannot load the certificate with key {key} ({reason})"
        ) from None


def _load_ca(context: ssl.SSLContext, ca: Path | str) -> None:
    _require_file(ca)
    try:
        context.load_verify_locations(cafile=str(ca))
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc.__class__.__name__
        raise ConfigError(f"{ca}: not a PEM CA bundle ({reason})") from None
