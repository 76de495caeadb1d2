"""Who is sending: a client-certificate subject or a bearer token (SPEC §5).

Tokens are configured by their SHA-256, and a presented token is hashed and
compared in constant time against every configured digest (``hmac.compare_digest``),
so neither the config file nor timing reveals a valid token.

The ingress trusts the other park's CA for client certificates, but that CA
also issues research senders' certificates; :class:`TwinPin` narrows "any
certificate of that CA" down to the twin gateway's own: its name, and its
public key (a certificate the CA issued under the twin's name for another
key is not the twin's).

``/metrics`` names organisations, routes and how many people each organisation
exported this year, so :func:`require_metrics_reader` admits a configured
scrape token or, without one, only a peer on the loopback interface.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import ssl
import threading
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web

from gateway.crypto.certs import spki_pin
from gateway.errors import BEARER_CHALLENGE, ClientError, Forbidden, Unauthenticated
from gateway.server.access import note
from gateway.server.config import TokenEntry, token_digest

_BEARER = "bearer "
#: RFC 6750 §3.1: a token was presented but is not (or no longer) valid.
INVALID_TOKEN_CHALLENGE = BEARER_CHALLENGE + ', error="invalid_token"'
#: The twin's endpoints authenticate the peer by its TLS client certificate.
MUTUAL_TLS_CHALLENGE = 'Mutual-TLS realm="hksz-gateway-twin"'
#: A refused peer's CN is logged up to this length (RFC 5280's ub-common-name is 64).
MAX_LOGGED_NAME = 64

log = structlog.get_logger("gateway.auth")


class TokenTable:
    """Bearer-token digests mapped to identities, checked in constant time.

    Args:
        entries: the configured tokens.
    """

    def __init__(self, entries: Iterable[TokenEntry]) -> None:
        self._entries: tuple[tuple[bytes, str], ...] = tuple(
            (bytes.fromhex(e.sha256), e.identity) for e in entries
        )

    def lookup(self, token: str) -> str | None:
        """The identity of ``token``, or None; scans every entry (no early exit)."""
        presented = bytes.fromhex(token_digest(token))
        found: str | None = None
        for digest, identity in self._entries:
            if hmac.compare_digest(digest, presented):
                found = identity
        return found


def bearer_token(request: web.Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header, if any.

    Raises:
        ClientError: more than one ``Authorization`` header (RFC 9110 §11.6.2
            allows one; which of several a proxy in front would honour is
            anyone's guess, so none is: nginx refuses them with 400 too).
    """
    values = request.headers.getall("Authorization", ())
    if len(values) > 1:
        raise ClientError("more than one Authorization header")
    value = values[0] if values else ""
    if value[: len(_BEARER)].lower() != _BEARER:
        return None
    token = value[len(_BEARER) :].strip()
    return token or None


def _peer_tls(request: web.Request) -> ssl.SSLObject | ssl.SSLSocket | None:
    """The connection's TLS object, or None on plain HTTP."""
    transport = request.transport
    if transport is None:
        return None
    ssl_object = transport.get_extra_info("ssl_object")
    if not isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket):
        return None
    return ssl_object


@dataclass(frozen=True, slots=True)
class _PeerCertificate:
    """What the handlers ask of a verified client certificate, worked out once."""

    common_name: str | None
    sha256: str  # hex, of the DER
    spki: str | None  # None: verified by OpenSSL, unparsable here (matches no pin)


#: Certificates already worked out, by their DER (a few peers, each on many requests).
_PEERS: dict[bytes, _PeerCertificate] = {}
#: Distinct certificates kept; past it the oldest is dropped (and worked out again).
MAX_CACHED_PEERS = 256
_PEERS_LOCK = threading.Lock()


def _peer(request: web.Request) -> _PeerCertificate | None:
    """The connection's verified client certificate, if it has one.

    The TLS layer has already verified it against the configured client CA
    (``ssl.CERT_OPTIONAL`` or ``CERT_REQUIRED``: a presented certificate that
    fails verification ends the handshake, and without a request for one,
    ``CERT_NONE``, there is no DER at all). Its subject is read from OpenSSL's
    validated form; the name, fingerprint and key pin are then kept by the
    certificate's exact DER, so the twin's many requests on a few
    connections do not parse the same certificate each time.
    """
    ssl_object = _peer_tls(request)
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    known = _PEERS.get(der)
    if known is not None:
        return known
    cert = ssl_object.getpeercert()
    if not cert:
        return None
    common_name = None
    subject: Any = cert.get("subject", ())
    for rdn in subject:
        for key, value in rdn:
            if key == "commonName" and common_name is None:
                common_name = str(value)
    try:
        pin: str | None = spki_pin(der)
    except ValueError:
        pin = None
    known = _PeerCertificate(common_name, hashlib.sha256(der).hexdigest(), pin)
    with _PEERS_LOCK:  # tests run several apps' loops in one process
        if len(_PEERS) >= MAX_CACHED_PEERS:
            del _PEERS[next(iter(_PEERS))]
        _PEERS[der] = known
    return known


def peer_common_name(request: web.Request) -> str | None:
    """The subject CN of a verified client certificate, if the connection has one."""
    peer = _peer(request)
    return peer.common_name if peer is not None else None


def peer_certificate_sha256(request: web.Request) -> str | None:
    """Hex SHA-256 of the verified client certificate (DER), if the connection has one."""
    peer = _peer(request)
    return peer.sha256 if peer is not None else None


def peer_spki_pin(request: web.Request) -> str | None:
    """The public-key pin of the verified client certificate, if the connection has one.

    Base64 SHA-256 of its SubjectPublicKeyInfo (:func:`~gateway.crypto.certs.spki_pin`).
    """
    peer = _peer(request)
    return peer.spki if peer is not None else None


class TwinPin:
    """Which client certificates are the twin gateway's (SPEC §6: only the twin may post).

    The ingress's TLS layer accepts any certificate chaining to the other
    park's CA, and that CA also issues its research senders' certificates. A
    sender holding one could otherwise post an envelope straight to the
    ingress, past the classifier, the policy, the ledger and the egress audit.
    So the twin is pinned by subject CN and by its public key (SPKI SHA-256,
    which a certificate mis-issued under the twin's name for another key
    does not match) or, in older configs, the SHA-256 fingerprint of its
    whole certificate; when both are set, both must match. No names means no
    peer is the twin. The config refuses names without a key or fingerprint
    pin (``IngressConfig.twin_spki``), so an empty ``spki`` here is a test's
    or an older caller's choice, not a deployment's.

    Args:
        names: allowed subject CNs (``ingress.twin_names``).
        fingerprints: allowed lower-case hex SHA-256 fingerprints
            (``ingress.twin_fingerprints``); empty: not checked.
        spki: allowed public-key pins, canonical base64 (``ingress.twin_spki``);
            empty: not checked.
    """

    def __init__(
        self, names: Iterable[str], fingerprints: Iterable[str] = (), spki: Iterable[str] = ()
    ) -> None:
        self._names = frozenset(names)
        self._fingerprints = frozenset(fingerprints)
        self._spki = frozenset(spki)

    def check(self, request: web.Request) -> str:
        """The twin's CN when the request comes from the pinned twin.

        Raises:
            Unauthenticated: no verified client certificate.
            Forbidden: a certificate that is not the twin's.
        """
        common_name = peer_common_name(request)
        if common_name is None:
            # No registered scheme names client-certificate authentication
            # (RFC 8705 defines none); this one tells a person what is missing.
            raise Unauthenticated(
                "only the twin gateway may call this endpoint (mutual TLS)",
                challenge=MUTUAL_TLS_CHALLENGE,
            )
        refused = None
        if common_name not in self._names:
            refused = "name"
        elif self._fingerprints and peer_certificate_sha256(request) not in self._fingerprints:
            refused = "fingerprint"
        elif self._spki and peer_spki_pin(request) not in self._spki:
            refused = "key"
        if refused is not None:
            # The CN and the key pin come from the peer's own certificate, public
            # values and not payload: safe to log, and the pin is what an operator
            # compares with twin_spki when a renewal changed the twin's key.
            log.warning(
                "twin_pin_refused",
                peer=common_name[:MAX_LOGGED_NAME],
                mismatch=refused,
                spki=peer_spki_pin(request),
            )
            raise Forbidden("this client certificate is not the twin gateway's")
        note(request, identity=common_name)
        return common_name


def sender_identity(request: web.Request, tokens: TokenTable) -> str:
    """The sender identity of a request: client certificate first, then bearer token.

    A request inside a ``CONNECT`` tunnel is the tunnel's sender's, who
    authenticated when it opened (:mod:`gateway.server.tunnel`); its own
    ``Authorization`` header is meant for the destination, not for us.

    Raises:
        Unauthenticated: neither a verified certificate nor a known token.
    """
    tunnel = getattr(request.protocol, "tunnel", None)
    if tunnel is not None:
        note(request, identity=tunnel.sender)
        return str(tunnel.sender)
    common_name = peer_common_name(request)
    if common_name is not None:
        note(request, identity=common_name)
        return common_name
    token = bearer_token(request)
    if token is None:
        raise Unauthenticated(
            "no sender identity: present a client certificate or an Authorization: Bearer token"
        )
    identity = tokens.lookup(token)
    if identity is None:
        raise Unauthenticated("unknown bearer token", challenge=INVALID_TOKEN_CHALLENGE)
    note(request, identity=identity)
    return identity


def digest_listed(token: str, digests: Iterable[str]) -> bool:
    """Whether the SHA-256 of ``token`` is one of ``digests`` (hex).

    Compares against every digest in constant time and without an early exit,
    so the answer time says nothing about which digest, if any, matched.
    """
    presented = bytes.fromhex(token_digest(token))
    ok = False
    for digest in digests:
        if hmac.compare_digest(bytes.fromhex(digest), presented):
            ok = True
    return ok


def require_officer(
    request: web.Request,
    officer_digests: Iterable[str],
    officers: Iterable[tuple[str, str]] = (),
) -> str:
    """The name of the compliance officer the request's bearer token belongs to.

    Args:
        officer_digests: digests of unnamed officer tokens (named
            ``officer-`` and the digest's first eight hex digits).
        officers: (digest, name) of named officers.

    Raises:
        Unauthenticated: no bearer token.
        Forbidden: a token that is not a compliance officer's.
    """
    token = bearer_token(request)
    if token is None:
        raise Unauthenticated("reviews need a compliance-officer bearer token")
    presented = bytes.fromhex(token_digest(token))
    found: str | None = None
    # Every digest is compared, in constant time and without an early exit.
    for digest in officer_digests:
        if hmac.compare_digest(bytes.fromhex(digest), presented):
            found = f"officer-{digest[:8]}"
    for digest, name in officers:
        if hmac.compare_digest(bytes.fromhex(digest), presented):
            found = name
    if found is None:
        raise Forbidden("this token may not approve or reject reviews")
    note(request, identity=found)
    return found


def is_loopback_peer(peername: object) -> bool:
    """Whether a transport's ``peername`` is an address on the loopback interface.

    Loopback is 127.0.0.0/8 and ``::1`` (RFC 1122 §3.2.1.3, RFC 4291 §2.5.3),
    and an IPv4-mapped ``::ffff:127.x.y.z``, which a dual-stack listener
    reports for an IPv4 loopback client (RFC 4291 §2.5.5.2). Anything else,
    including a missing or non-IP peer name, is not loopback (fail closed).

    Args:
        peername: ``transport.get_extra_info("peername")``: ``(host, port)``
            for IPv4, ``(host, port, flowinfo, scope_id)`` for IPv6, or None.
    """
    if not isinstance(peername, tuple) or not peername or not isinstance(peername[0], str):
        return False
    try:
        address = ipaddress.ip_address(peername[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def require_metrics_reader(request: web.Request, metrics_digests: Collection[str]) -> None:
    """Check that the request may read ``/metrics`` (``metrics_tokens`` in the settings).

    With digests configured, a listed bearer token is the only way in, from
    any address. Without them, only a loopback peer of this very connection
    may read: the transport's peer address, never ``X-Forwarded-For``, which
    any client can write.

    Raises:
        Unauthenticated: tokens are configured and the request carries none.
        Forbidden: a token that is not listed, or, without tokens, a peer that
            is not on the loopback interface.
    """
    if metrics_digests:
        token = bearer_token(request)
        if token is None:
            raise Unauthenticated("/metrics needs a metrics bearer token (metrics_tokens)")
        if not digest_listed(token, metrics_digests):
            raise Forbidden("this token may not read /metrics")
        return
    transport = request.transport
    peer = transport.get_extra_info("peername") if transport is not None else None
    if not is_loopback_peer(peer):
        raise Forbidden(
            "/metrics answers loopback peers only: set metrics_tokens in the gateway "
            "configuration and give the scraper the token"
        )


def known_sender(identity: str, senders: Mapping[str, object]) -> None:
    """Raise 401 when ``identity`` is not a sender of the policy in force."""
    if identity not in senders:
        raise Unauthenticated("sender identity is not known to the policy in force")
