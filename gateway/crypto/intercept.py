"""The interception CA: server certificates minted on the fly for ``CONNECT`` hosts.

An ``HTTPS_PROXY`` client opens ``CONNECT host:port`` and then speaks TLS to
``host`` through the tunnel (issue 18). To inspect what it sends, the egress
terminates that TLS itself, with a leaf certificate for ``host`` signed by the
park's *interception CA*, which the research users' machines trust, as Squid's
``ssl_bump``, mitmproxy and the enterprise DLP proxies do.
:meth:`InterceptionCA.context_for` returns the server-side
``ssl.SSLContext`` for one host.

Leaves follow the CA/Browser Forum's baseline profile as far as a private CA
needs to for every client to accept them (Chrome, Apple and OpenSSL ≥ 3 with
``X509_STRICT`` are the strictest): the name only in the SAN (RFC 6125 §6.4.4:
a client must not fall back to the CN when a SAN is present; RFC 2818 §3.1),
``serverAuth`` only, a random 159-bit serial, AKI and SKI, a validity far
below Apple's 398-day ceiling. Their keys and certificates exist only in
memory: ``SSLContext.load_cert_chain`` reads files only, so the PEM goes
through an anonymous ``memfd`` that is closed as soon as OpenSSL has read it;
nothing touches a file system.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import ssl
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.crypto.certs import CLOCK_SKEW, ORGANISATION, load_certificates, sign_leaf
from gateway.crypto.keys import read_private_file
from gateway.crypto.tls import MINIMUM_TLS_VERSION
from gateway.errors import ConfigError
from gateway.posix import write_all

#: Hosts whose context stays cached. A tunnel goes only to a route's
#: destination, so a park has tens of hosts; 1,024 leaves room for many
#: routes while bounding memory against a client cycling SNI names: an
#: OpenSSL 3.0 context with its leaf is ~27 KB of RSS, ~27 MB for 1,024
#: (10,000 names minted: +27 MB; unbounded, +265 MB; tests/crypto/test_intercept.py).
DEFAULT_MAX_HOSTS = 1024
#: Leaf lifetime: a day. The cache re-mints before expiry (LEAF_REFRESH), so
#: no client ever sees an old leaf; a short life limits what a leaked leaf
#: key (held only in memory) is good for.
LEAF_VALIDITY = dt.timedelta(hours=24)
#: A cached leaf this close to its notAfter is minted anew: longer than any
#: transfer (egress.total_timeout), so a handshake never gets a leaf that
#: expires while the tunnel is in use.
LEAF_REFRESH = dt.timedelta(hours=1)
#: A PEM ECDSA P-256 key is ~240 bytes, an RSA-4096 one ~3.3 KB: anything
#: larger is not a key file (and is not read).
MAX_KEY_FILE_BYTES = 64 * 1024
#: RFC 1035 §2.3.4: 255 octets on the wire, 253 characters written out.
MAX_HOST_LENGTH = 253
#: X.520 ub-common-name: a longer host goes in the SAN only (RFC 5280 App. A).
MAX_COMMON_NAME_LENGTH = 64
#: TLS 1.2 suites: forward secrecy (ECDHE) and AEAD only, as Mozilla's
#: "intermediate" profile. TLS 1.3 suites are all AEAD and are left as
#: OpenSSL sets them.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
#: ALPN: HTTP/1.1 only (issue 18); a client offering only ``h2`` gets no
#: protocol selected (RFC 7301 §3.2 allows the server to ignore ALPN) and
#: sees an HTTP/1.1 server.
ALPN_PROTOCOLS = ("http/1.1",)

#: One host-name label (RFC 1123 §2.1): letters, digits, hyphens, not at either end.
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)\Z")


@dataclass(frozen=True, slots=True)
class CacheInfo:
    """How the per-host cache is doing (for metrics and tests).

    Attributes:
        hits: contexts served from the cache.
        misses: contexts minted (a new host, or a cached leaf near expiry).
        evictions: least recently used hosts dropped to stay within ``max_hosts``.
        max_hosts: the bound.
        size: hosts cached now.
    """

    hits: int
    misses: int
    evictions: int
    max_hosts: int
    size: int


def canonical_host(host: str) -> tuple[str, x509.GeneralName]:
    """The cache key and the SAN entry for ``host``.

    A DNS name is lower-cased and loses one trailing dot (``Example.COM.``
    and ``example.com`` are one host); an IP address is written the way
    :mod:`ipaddress` writes it (``::0001`` is ``::1``).

    Args:
        host: a DNS host name, or an IPv4 or IPv6 address (IPv6 without brackets).

    Raises:
        ValueError: empty, too long, a wildcard, a zone index, brackets, or a
            character a host name may not hold (RFC 1123: letters, digits,
            hyphens, dots between labels of 1-63 characters; an IDN must come
            in its ``xn--`` A-label form); a dotted name whose last label is
            all digits that is not an IPv4 address (``999.1.1.1``). The
            message never repeats ``host``: the client chose it, and it may
            end up in a log line or an answer (SPEC §3.2: no output holds a
            matched value; docs/running.md: no error repeats what the client chose).
    """
    if not host:
        raise ValueError("empty host name")
    if len(host) > MAX_HOST_LENGTH:
        raise ValueError(f"host name longer than {MAX_HOST_LENGTH} characters")
    if ":" in host:
        # ipaddress accepts a scope ("fe80::1%eth0"), which no certificate can carry.
        if "%" in host:
            raise ValueError("an IPv6 zone index cannot be in a certificate")
        try:
            address = ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError("not an IPv6 address (give it without brackets)") from None
        return str(address), x509.IPAddress(address)
    name = host.lower()
    name = name.removesuffix(".")
    labels = name.split(".")
    if not all(_LABEL.match(label) for label in labels):
        raise ValueError("not a host name (letters, digits, hyphens and dots only)")
    if labels[-1].isdigit():
        # As URL parsers do (WHATWG "ends in a number"): all-digit last label is IPv4 or nothing.
        try:
            v4 = ipaddress.IPv4Address(name)
        except ValueError:
            raise ValueError("neither a host name nor an IPv4 address") from None
        return str(v4), x509.IPAddress(v4)
    return name, x509.DNSName(name)


class InterceptionCA:
    """A CA key and certificate that sign leaf certificates for ``CONNECT`` hosts.

    Thread-safe: the cache is guarded by a lock, and minting runs outside it
    (two threads asking for the same new host may both mint; one result is kept).
    """

    def __init__(
        self,
        key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
        chain: list[x509.Certificate],
        *,
        max_hosts: int = DEFAULT_MAX_HOSTS,
    ) -> None:
        """Use ``key`` and ``chain`` (the CA first); :meth:`load` reads and checks them.

        Raises:
            ValueError: ``max_hosts`` is below 1.
        """
        if max_hosts < 1:
            raise ValueError("max_hosts must be at least 1")
        self._key = key
        self._ca = chain[0]
        try:  # the leaves' AKI must be the CA's SKI as the CA states it (RFC 5280 §4.2.1.1)
            self._ca_ski = self._ca.extensions.get_extension_for_class(
                x509.SubjectKeyIdentifier
            ).value
        except x509.ExtensionNotFound:
            self._ca_ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        self._chain_pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
        self._max_hosts = max_hosts
        self._cache: OrderedDict[str, tuple[ssl.SSLContext, float]] = OrderedDict()
        self._lock = threading.Lock()
        self._hits = self._misses = self._evictions = 0

    @classmethod
    def load(
        cls, cert: Path | str, key: Path | str, *, max_hosts: int = DEFAULT_MAX_HOSTS
    ) -> InterceptionCA:
        """Read the CA certificate (PEM) and its private key (PEM, unencrypted).

        The key file is read like every secret of the gateway
        (:func:`~gateway.crypto.keys.read_private_file`). The certificate file
        may hold further certificates after the CA (when the interception CA
        is a subordinate of an organisation's own root): they are sent with
        every leaf.

        Raises:
            ConfigError: naming the file: unreadable, too large, not a regular
                file, group- or world-readable (the key), not a CA, expired,
                not matching the key, or of an unsupported key type; or this
                system cannot hold a certificate in memory (no ``memfd``).
        """
        chain = load_certificates(cert)
        data = read_private_file(key, max_bytes=MAX_KEY_FILE_BYTES, what="interception CA key")
        try:
            private = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError):
            raise ConfigError(f"{key}: not an unencrypted PEM private key") from None
        if not isinstance(private, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise ConfigError(f"{key}: an interception CA key must be ECDSA or RSA")
        _check_ca(chain[0], private, cert, key)
        if not hasattr(os, "memfd_create") or not Path("/proc/self/fd").is_dir():
            raise ConfigError(
                f"{cert}: minting certificates in memory needs Linux memfd_create and /proc"
            )
        ca = cls(private, chain, max_hosts=max_hosts)
        ca._mint(*canonical_host("localhost"))  # fail at start-up, not at the first CONNECT
        return ca

    @property
    def certificate_pem(self) -> bytes:
        """The CA certificate(s), PEM: what clients must trust (``gateway certs trust-help``)."""
        return self._chain_pem

    def context_for(self, host: str) -> ssl.SSLContext:
        """A server context presenting a leaf for ``host``, from the cache when it has one.

        Args:
            host: the SNI name, or the ``CONNECT`` host when the client sent
                none (an IP address literal, IPv6 without brackets).

        Raises:
            ValueError: ``host`` is not a host name or an IP address
                (:func:`canonical_host`).
        """
        # Only canonical names are cached, so a name found as written is valid
        # and needs no parsing (which costs 8-15 µs for an IP address).
        context = self._cached(host)
        if context is not None:
            return context
        key, san = canonical_host(host)
        context = self._cached(key)
        if context is not None:
            return context
        context, refresh_at = self._mint(key, san)
        with self._lock:
            self._misses += 1
            self._cache[key] = (context, refresh_at)
            self._cache.move_to_end(key)
            while len(self._cache) > self._max_hosts:
                self._cache.popitem(last=False)
                self._evictions += 1
        return context

    def _cached(self, key: str) -> ssl.SSLContext | None:
        """The cached context of ``key``, unless absent or due for renewal."""
        now = time.time()
        with self._lock:
            cached = self._cache.get(key)
            if cached is None or now >= cached[1]:
                return None
            self._cache.move_to_end(key)
            self._hits += 1
            return cached[0]

    def cache_info(self) -> CacheInfo:
        """Hits, misses, evictions, the bound and the current size of the per-host cache."""
        with self._lock:
            return CacheInfo(
                self._hits, self._misses, self._evictions, self._max_hosts, len(self._cache)
            )

    def _mint(self, name: str, san: x509.GeneralName) -> tuple[ssl.SSLContext, float]:
        """A fresh leaf for ``name`` in a new context; and when to mint it anew."""
        now = dt.datetime.now(dt.UTC)
        leaf_key = ec.generate_private_key(ec.SECP256R1())
        leaf = _leaf_certificate(name, san, leaf_key, self._ca, self._ca_ski, self._key, now)
        pem = (
            leaf_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            + leaf.public_bytes(serialization.Encoding.PEM)
            + self._chain_pem
        )
        context = tunnel_server_context()
        _load_chain_from_memory(context, pem)
        return context, (leaf.not_valid_after_utc - LEAF_REFRESH).timestamp()


def _check_ca(
    ca: x509.Certificate,
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    cert_path: Path | str,
    key_path: Path | str,
) -> None:
    """Refuse a certificate that cannot sign leaves clients accept, or that is not ``key``'s."""
    try:
        constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise ConfigError(f"{cert_path}: not a CA certificate (basicConstraints CA:TRUE missing)")
    try:
        usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
        if not usage.key_cert_sign:
            raise ConfigError(f"{cert_path}: the CA's keyUsage does not allow keyCertSign")
    except x509.ExtensionNotFound:
        pass
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, public) != ca.public_key().public_bytes(der, public):
        raise ConfigError(f"{key_path}: does not match the CA certificate {cert_path}")
    if ca.not_valid_after_utc <= dt.datetime.now(dt.UTC):
        raise ConfigError(
            f"{cert_path}: the interception CA expired on {ca.not_valid_after_utc:%Y-%m-%d}"
        )


def _leaf_certificate(
    name: str,
    san: x509.GeneralName,
    leaf_key: ec.EllipticCurvePrivateKey,
    ca: x509.Certificate,
    ca_ski: x509.SubjectKeyIdentifier,
    ca_key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey,
    now: dt.datetime,
) -> x509.Certificate:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION)]
    if len(name) <= MAX_COMMON_NAME_LENGTH:
        # For people reading the certificate; clients match the SAN only.
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, name))
    return sign_leaf(
        x509.Name(attributes),
        leaf_key.public_key(),
        [san],
        ExtendedKeyUsageOID.SERVER_AUTH,
        (ca, ca_ski, ca_key),
        (
            max(now - CLOCK_SKEW, ca.not_valid_before_utc),
            min(now + LEAF_VALIDITY, ca.not_valid_after_utc),
        ),
    )


def tunnel_server_context() -> ssl.SSLContext:
    """A server context without a certificate, with the policy of every minted one.

    TLS 1.2+, ECDHE and AEAD only, ALPN ``http/1.1``, no client certificate
    asked for. :meth:`InterceptionCA.context_for` loads one host's leaf into
    one of these; it is cached and shared by every tunnel to that host, so an
    ``sni_callback`` set on it must suit them all (:mod:`gateway.server.tunnel`
    sets one refusing any name but the host's). It can also be a base that
    answers by SNI: an ``sni_callback`` setting ``ssl_object.context`` to
    :meth:`InterceptionCA.context_for` of the name; the switched-to context
    supplies the certificate and ALPN, the protocol versions and ciphers stay
    the base's, which are the same.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # verify_mode CERT_NONE: none requested
    context.minimum_version = MINIMUM_TLS_VERSION
    context.set_ciphers(TLS12_CIPHERS)
    # Client-initiated TLS 1.2 renegotiation costs the server a handshake per
    # request for free (CVE-2011-1473); nothing a transfer needs.
    context.options |= ssl.OP_NO_RENEGOTIATION
    context.set_alpn_protocols(list(ALPN_PROTOCOLS))
    return context


def _load_chain_from_memory(context: ssl.SSLContext, pem: bytes) -> None:
    """``load_cert_chain`` from an anonymous in-memory file (key first, then the chain).

    ``/proc/self/fd/N`` of a memfd opens the same in-memory file; it has no
    name in any file system, and it is gone when the descriptor is closed.
    """
    fd = os.memfd_create("hksz-intercept-leaf", os.MFD_CLOEXEC)
    try:
        write_all(fd, pem)
        context.load_cert_chain(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)
