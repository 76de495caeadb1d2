"""``ssl.SSLContext`` builders for the gateway's TLS and mutual-TLS hops (SPEC §6).

The server side presents its certificate and, for the ingress and for
senders identified by client certificate, verifies client certificates
against a CA bundle (the *other* park's CA between the twins). The client
side verifies the server against a given CA bundle, or the system trust
store for public HTTPS destinations, and presents a client certificate for
mutual TLS. Problems with the files are reported as one-line
:class:`~gateway.errors.ConfigError`\\ s naming the file.

A client context may also pin the servers' public keys (``pin_spki``): the
right CA and the right name are then not enough, the server must hold one of
the pinned keys. The check runs inside the handshake, as the last step of
``do_handshake`` (:class:`SpkiPinnedContext`), so it holds for every
connection made with the context (asyncio's memory-BIO transports, which
aiohttp uses, and blocking sockets alike) and fails before the application
can write a single byte, the way a failed certificate verification does.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from pathlib import Path

from gateway.crypto.certs import spki_pin
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


class SpkiPinMismatch(ssl.SSLCertVerificationError):
    """The server's certificate verified, but its public key is not a pinned one.

    A subclass of :class:`ssl.SSLCertVerificationError`, so every client
    treats it as the certificate failure it is (aiohttp raises
    ``ClientConnectorCertificateError``, asyncio aborts the connection).

    Attributes:
        server: the name the client connected to.
        presented: the pin of the key the server presented (a public value).
    """

    def __init__(self, server: str, presented: str) -> None:
        super().__init__(
            f"{server}: the server's TLS key is not a pinned one (pin_spki); "
            f"it presented sha256//{presented}"
        )
        self.server = server
        self.presented = presented
        # What ssl sets on its own verification errors; readers of those expect them.
        self.verify_code = 0
        self.verify_message = "public key pin mismatch"


def _check_pin(connection: ssl.SSLObject | ssl.SSLSocket) -> None:
    """Raise :class:`SpkiPinMismatch` unless the completed handshake's peer key is pinned."""
    context = connection.context
    pins = context.spki_pins if isinstance(context, SpkiPinnedContext) else frozenset()
    der = connection.getpeercert(binary_form=True)
    try:
        presented = spki_pin(der) if der else ""
    except ValueError:
        # OpenSSL accepted it but cryptography cannot parse it: no pin can match.
        # It must still surface as an SSLError, the only kind asyncio's
        # handshake turns into a failed connection.
        presented = ""
    if presented not in pins:  # no certificate, unparsable, or no pins: fail closed
        raise SpkiPinMismatch(connection.server_hostname or "server", presented)


class _PinnedObject(ssl.SSLObject):
    """asyncio's (and so aiohttp's) TLS connections: check the pin as the handshake ends."""

    def do_handshake(self) -> None:
        """Complete the handshake, then refuse a server whose key is not pinned."""
        super().do_handshake()
        _check_pin(self)


class _PinnedSocket(ssl.SSLSocket):
    """Blocking sockets wrapped with the same context: the same check."""

    def do_handshake(self, block: bool = False) -> None:
        """Complete the handshake, then refuse a server whose key is not pinned."""
        super().do_handshake(block)
        _check_pin(self)


class SpkiPinnedContext(ssl.SSLContext):
    """A client context whose connections accept only servers holding a pinned key.

    ``sslobject_class`` and ``sslsocket_class`` are the documented hooks
    (Python ≥ 3.7) for what ``wrap_bio`` and ``wrap_socket`` return; the
    subclasses check the pin at the end of ``do_handshake``. A failure there
    is a failed handshake: the transport is closed before the application
    protocol is told the connection exists, so not one byte of a request
    (for the twin: not the age header) is written. Certificate and hostname
    verification run first and still apply. An empty :attr:`spki_pins`
    refuses every server.

    Attributes:
        spki_pins: the accepted pins, bare base64 as :func:`~gateway.crypto.certs.spki_pin`
            writes them.
    """

    sslobject_class = _PinnedObject
    sslsocket_class = _PinnedSocket
    spki_pins: frozenset[str] = frozenset()

    @classmethod
    def client(cls, pins: Iterable[str]) -> SpkiPinnedContext:
        """A ``PROTOCOL_TLS_CLIENT`` context (hostname check and verification on) with ``pins``."""
        context = cls(ssl.PROTOCOL_TLS_CLIENT)
        context.spki_pins = frozenset(pins)
        return context


def client_ssl_context(
    *,
    ca: Path | str | None = None,
    cert: Path | str | None = None,
    key: Path | str | None = None,
    pin_spki: Iterable[str] = (),
) -> ssl.SSLContext:
    """A client context that verifies the server and optionally presents a certificate.

    Args:
        ca: CA bundle the server must chain to; the system trust store when omitted.
        cert: PEM client certificate for mutual TLS (needs ``key``).
        key: PEM private key of ``cert``.
        pin_spki: public-key pins (canonical bare base64, :func:`~gateway.crypto.certs.parse_pin`);
            when given, every server reached with this context must hold one
            of these keys as well as verify against ``ca``.

    Raises:
        ConfigError: a file is missing or invalid, or only one of cert/key is given.
    """
    pins = frozenset(pin_spki)
    # check_hostname and CERT_REQUIRED are on for PROTOCOL_TLS_CLIENT.
    context = SpkiPinnedContext.client(pins) if pins else ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
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
