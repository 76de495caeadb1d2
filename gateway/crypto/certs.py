"""Development PKI for the two parks: a CA each, server and client certificates.

``gateway certs init DIR`` writes, for each park (``hk`` and ``sz``)::

    DIR/<park>/ca.crt  ca.key          the park's dev CA (ECDSA P-256, 2 years)
    DIR/<park>/server.crt  server.key  the park gateway's TLS server certificate
    DIR/<park>/client.crt  client.key  its client certificate for mutual TLS
    DIR/<park>/audit-ed25519.key       its audit checkpoint signing key (Ed25519)
    DIR/<park>/intercept-ca.pem  .key  its egress's interception CA (HTTPS_PROXY, issue 18)
    DIR/pins.toml                      the leaves' public-key pins, to paste into configs

Leaf certificates are ECDSA P-256, valid 90 days, with SANs ``localhost``,
``127.0.0.1`` and ``::1``. Each park's gateway trusts the *other* park's CA
for client certificates, so the HK egress presents ``hk/client.crt`` to the
SZ ingress, which verifies it against ``hk/ca.crt``. Private keys are 0600.
Re-running keeps existing files; ``force`` re-issues the CAs and certificates
(never the audit key: replacing it would orphan the signed audit history; nor
the interception CA: research users' machines trust it, and a new one would
break every client until each is told to trust it again; delete its two files
to re-issue it).

The interception CA signs the leaf certificates the egress mints on the fly
for the hosts that ``HTTPS_PROXY`` clients ``CONNECT`` to
(:mod:`gateway.crypto.intercept`). It is a CA of its own, not the park's dev
CA: clients trust it for server certificates of *any* name, which the twins'
CA must never be. It has no nameConstraints: the destinations are the routes'
hosts, which an operator may change without re-issuing a CA trusted on every
research machine.

A certificate's subject and CA say who *may* hold a key; the twins also pin
each other's *key* (:func:`spki_pin`, RFC 7469's ``pin-sha256``: base64
SHA-256 of the DER SubjectPublicKeyInfo, as curl's ``--pinnedpubkey
sha256//…`` writes it), so a certificate mis-issued by the right CA under the
right name, but for another key, is refused. A pin survives renewal with the
same key, unlike a whole-certificate fingerprint.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import ipaddress
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.crypto.keys import load_or_create_ed25519, read_small_file, write_private_file
from gateway.errors import ConfigError

#: The two parks of the cooperation zone, each with its own CA (SPEC §2).
PARKS = ("hk", "sz")
#: Dev CA lifetime: two years, long enough to outlive many leaf rotations.
CA_VALIDITY = dt.timedelta(days=730)
#: Leaf lifetime: 90 days, the public-web practice (Let's Encrypt), so expiry
#: handling and the days-to-expiry metric are exercised in development too.
LEAF_VALIDITY = dt.timedelta(days=90)
#: Backdate notBefore so that a peer whose clock is a little behind accepts a
#: certificate issued just now.
CLOCK_SKEW = dt.timedelta(minutes=5)
#: Subject alternative names of every leaf: the gateways run on loopback in dev.
DNS_NAMES = ("localhost",)
IP_ADDRESSES = ("127.0.0.1", "::1")
#: Organisation written into every dev certificate, so nobody mistakes it for production.
ORGANISATION = "hksz-gateway development"
#: Public files (certificates) are world-readable; keys are 0600 (keys.PRIVATE_FILE_MODE).
PUBLIC_FILE_MODE = 0o644
#: A certificate file bigger than this is not a PEM bundle we issued or expect.
MAX_CERT_FILE_SIZE = 1 << 20

AUDIT_KEY_NAME = "audit-ed25519.key"
#: The park egress's interception CA (issue 18): PEM certificate and its key (0600).
INTERCEPT_CA_CERT_NAME = "intercept-ca.pem"
INTERCEPT_CA_KEY_NAME = "intercept-ca.key"
#: Where ``init_dev_pki`` writes the leaves' SPKI pins, beside the parks' folders.
PINS_FILE_NAME = "pins.toml"
#: RFC 7469 §2.4 names the hash in the pin; curl's ``--pinnedpubkey`` writes it
#: as this prefix. Accepted on input, and SHA-256 is the only hash there is.
PIN_PREFIX = "sha256//"
#: Bytes of a SHA-256 digest: a pin is their base64 (44 characters with padding).
PIN_DIGEST_SIZE = 32


@dataclass(frozen=True, slots=True)
class ParkPaths:
    """Where one park's dev PKI files live."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        """The park CA certificate (the other park's ``client_ca``)."""
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        """The park CA private key."""
        return self.directory / "ca.key"

    def cert(self, role: str) -> Path:
        """``server.crt`` or ``client.crt``."""
        return self.directory / f"{role}.crt"

    def key(self, role: str) -> Path:
        """``server.key`` or ``client.key``."""
        return self.directory / f"{role}.key"

    @property
    def audit_key(self) -> Path:
        """The park gateway's Ed25519 audit signing key."""
        return self.directory / AUDIT_KEY_NAME

    @property
    def intercept_ca_cert(self) -> Path:
        """The park egress's interception CA certificate: what ``HTTPS_PROXY`` clients trust."""
        return self.directory / INTERCEPT_CA_CERT_NAME

    @property
    def intercept_ca_key(self) -> Path:
        """The interception CA's private key (0600)."""
        return self.directory / INTERCEPT_CA_KEY_NAME


@dataclass(frozen=True, slots=True)
class FileAction:
    """What ``init_dev_pki`` did with one file: ``created``, ``replaced`` or ``kept``."""

    path: Path
    action: str


@dataclass(frozen=True, slots=True)
class CertInfo:
    """The facts ``gateway certs show`` prints about one certificate."""

    subject: str
    issuer: str
    serial: int
    not_before: dt.datetime
    not_after: dt.datetime
    dns_names: tuple[str, ...]
    ip_addresses: tuple[str, ...]
    is_ca: bool
    key_type: str
    sha256_fingerprint: str
    spki_sha256: str

    def seconds_to_expiry(self, now: dt.datetime | None = None) -> float:
        """Seconds until notAfter (negative once expired)."""
        return (self.not_after - (now or dt.datetime.now(dt.UTC))).total_seconds()


def init_dev_pki(
    directory: Path | str, *, force: bool = False, now: dt.datetime | None = None
) -> list[FileAction]:
    """Create (or complete) the dev PKI of both parks under ``directory``.

    Args:
        directory: root folder; ``<park>/`` sub-folders are created (mode 0700).
        force: re-issue CAs and certificates even if present.
        now: issuance time (tests); the current time when omitted.

    Returns:
        One entry per file, saying whether it was created, replaced or kept.

    Raises:
        ConfigError: a folder cannot be created, or an existing CA is
            incomplete or unreadable.
    """
    issued_at = now or dt.datetime.now(dt.UTC)
    actions: list[FileAction] = []
    for park in PARKS:
        paths = ParkPaths(Path(directory) / park)
        try:
            paths.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise ConfigError(f"{paths.directory}: cannot create: {exc.strerror}") from None
        ca_key, ca_cert, ca_new = _ensure_ca(park, paths, force, issued_at, actions)
        for role in ("server", "client"):
            cert_path, key_path = paths.cert(role), paths.key(role)
            if cert_path.exists() and key_path.exists() and not (force or ca_new):
                actions += [FileAction(cert_path, "kept"), FileAction(key_path, "kept")]
                continue
            existed = cert_path.exists() or key_path.exists()
            key = ec.generate_private_key(ec.SECP256R1())
            cert = _issue_leaf(park, role, key, ca_key, ca_cert, issued_at)
            _write_key(key_path, key)
            _write_public(cert_path, cert.public_bytes(serialization.Encoding.PEM))
            verb = "replaced" if existed else "created"
            actions += [FileAction(cert_path, verb), FileAction(key_path, verb)]
        existed = paths.audit_key.exists()
        load_or_create_ed25519(paths.audit_key)
        actions.append(FileAction(paths.audit_key, "kept" if existed else "created"))
        verb = _ensure_interception_ca(paths, park, issued_at)
        actions += [
            FileAction(paths.intercept_ca_cert, verb),
            FileAction(paths.intercept_ca_key, verb),
        ]
    actions.append(write_dev_pins(directory))
    return actions


def create_interception_ca(
    directory: Path | str, park: str, *, now: dt.datetime | None = None
) -> tuple[Path, Path]:
    """Make ``park``'s interception CA in ``directory``, unless it is there already.

    Writes ``intercept-ca.pem`` and ``intercept-ca.key`` (0600): ECDSA P-256,
    named "hksz-gateway <PARK> interception CA", pathLen 0, valid as long as
    the dev CAs, without nameConstraints (see the module docstring). An
    existing pair is kept, after checking that the key matches the certificate.

    Args:
        directory: the park's folder (created 0700 if missing).
        park: ``hk`` or ``sz``; it goes into the CA's name.
        now: issuance time (tests); the current time when omitted.

    Returns:
        The certificate's and the key's paths.

    Raises:
        ConfigError: the folder cannot be created, only one of the two files
            exists, or the existing pair does not match.
    """
    paths = ParkPaths(Path(directory))
    try:
        paths.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ConfigError(f"{paths.directory}: cannot create: {exc.strerror}") from None
    _ensure_interception_ca(paths, park, now or dt.datetime.now(dt.UTC))
    return paths.intercept_ca_cert, paths.intercept_ca_key


def load_certificates(path: Path | str) -> list[x509.Certificate]:
    """Read every certificate of a PEM file (or a single DER certificate).

    Raises:
        ConfigError: unreadable, too large, or holding no certificate.
    """
    target = Path(path)
    data = read_small_file(target, MAX_CERT_FILE_SIZE, "a certificate")
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_certificates(data)
        return [x509.load_der_x509_certificate(data)]
    except ValueError:
        raise ConfigError(f"{target}: not a PEM or DER X.509 certificate") from None


def describe_certificate(cert: x509.Certificate) -> CertInfo:
    """Extract subject, issuer, SANs, validity and fingerprint of ``cert``."""
    dns_names: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns_names = tuple(san.get_values_for_type(x509.DNSName))
        ips = tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        pass
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    fingerprint = cert.fingerprint(hashes.SHA256()).hex(":").upper()
    return CertInfo(
        subject=cert.subject.rfc4514_string(),
        issuer=cert.issuer.rfc4514_string(),
        serial=cert.serial_number,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        dns_names=dns_names,
        ip_addresses=ips,
        is_ca=is_ca,
        key_type=_key_type(cert),
        sha256_fingerprint=fingerprint,
        spki_sha256=spki_pin(cert),
    )


def spki_pin(cert: x509.Certificate | bytes) -> str:
    """The public-key pin of a certificate: base64 SHA-256 of its DER SubjectPublicKeyInfo.

    This is RFC 7469's ``pin-sha256`` and curl's ``--pinnedpubkey sha256//…``
    value, the same as ``openssl x509 -pubkey -noout | openssl pkey -pubin
    -outform der | openssl dgst -sha256 -binary | base64``. The SPKI is hashed
    exactly as the certificate carries it (not re-encoded from the parsed
    key), so the pin matches what other tools compute for the same file.

    Args:
        cert: a certificate, or its DER encoding (``getpeercert(binary_form=True)``).

    Raises:
        ValueError: ``cert`` is bytes that are not a DER certificate.
    """
    if isinstance(cert, bytes):
        cert = x509.load_der_x509_certificate(cert)
    digest = hashlib.sha256(_spki_der(cert.tbs_certificate_bytes)).digest()
    return base64.b64encode(digest).decode("ascii")


def parse_pin(text: str) -> str:
    """A pin as written in a config (bare or ``sha256//``-prefixed), in canonical form.

    Returns:
        The bare base64 pin, as :func:`spki_pin` writes it.

    Raises:
        ValueError: not the base64 of a 32-byte SHA-256 digest; the message
            never repeats the text (it may be something pasted by mistake).
    """
    bare = text.removeprefix(PIN_PREFIX)
    try:
        digest = base64.b64decode(bare, validate=True)
    except (binascii.Error, ValueError):
        digest = b""
    # Re-encoding rejects non-canonical spellings (stray bits, missing padding),
    # so one key has exactly one pin and set membership is the comparison.
    if len(digest) != PIN_DIGEST_SIZE or base64.b64encode(digest).decode("ascii") != bare:
        raise ValueError(
            "holds public-key pins: base64 SHA-256 of a certificate's SubjectPublicKeyInfo "
            "(44 characters, optionally prefixed sha256//), as `gateway certs show` prints them"
        )
    return bare


def write_dev_pins(directory: Path | str) -> FileAction:
    """Write ``DIR/pins.toml``: the SPKI pins of both parks' leaf certificates.

    The operator pastes them into the configs: each ingress pins the other
    park's client key (``ingress.twin_spki``), each egress the other park's
    server key (``egress.upstream_tls.pin_spki``). The file is rewritten only
    when a pin changed (``kept`` otherwise), so a re-run changes nothing.

    Raises:
        ConfigError: a certificate cannot be read or the file cannot be written.
    """
    path = Path(directory) / PINS_FILE_NAME
    lines = [
        "# Public-key pins of the dev certificates (RFC 7469 pin-sha256: base64 SHA-256",
        "# of the DER SubjectPublicKeyInfo), rewritten by `gateway certs init`.",
        "# The sz config pins hk's keys and the hk config pins sz's:",
        '#   [ingress] twin_spki = ["<other park client>"]',
        '#   [egress.upstream_tls] pin_spki = ["<other park server>"]',
    ]
    for park in PARKS:
        paths = ParkPaths(Path(directory) / park)
        lines.append(f"\n[{park}]")
        for role in ("server", "client"):
            lines.append(f'{role} = "{spki_pin(load_certificates(paths.cert(role))[0])}"')
    text = ("\n".join(lines) + "\n").encode("ascii")
    try:
        existing = path.read_bytes() if path.exists() else None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    if existing == text:
        return FileAction(path, "kept")
    _write_public(path, text)
    return FileAction(path, "created" if existing is None else "replaced")


def _der_item(data: bytes, offset: int) -> tuple[int, int]:
    """Where the DER element at ``offset`` ends and where its contents start.

    Only definite lengths exist in DER (X.690 §10.1), and the certificate was
    already parsed by ``cryptography``, so no further checks are needed here.
    """
    length = data[offset + 1]
    start = offset + 2
    if length & 0x80:
        size = length & 0x7F
        length = int.from_bytes(data[start : start + size], "big")
        start += size
    return start + length, start


def _spki_der(tbs: bytes) -> bytes:
    """The ``subjectPublicKeyInfo`` element of a DER TBSCertificate (RFC 5280 §4.1)."""
    _, position = _der_item(tbs, 0)  # step into the TBSCertificate SEQUENCE
    if tbs[position] == 0xA0:  # [0] EXPLICIT version, absent for v1 certificates
        position, _ = _der_item(tbs, position)
    # serialNumber, signature, issuer, validity, subject; then the SPKI.
    for _ in range(5):
        position, _ = _der_item(tbs, position)
    end, _ = _der_item(tbs, position)
    return tbs[position:end]


def _ensure_ca(
    park: str, paths: ParkPaths, force: bool, now: dt.datetime, actions: list[FileAction]
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate, bool]:
    have_cert, have_key = paths.ca_cert.exists(), paths.ca_key.exists()
    if have_cert and have_key and not force:
        ca_key, ca_cert = _load_ca_pair(paths.ca_cert, paths.ca_key, remedy="use --force")
        actions += [FileAction(paths.ca_cert, "kept"), FileAction(paths.ca_key, "kept")]
        return ca_key, ca_cert, False
    if (have_cert or have_key) and not force:
        missing = paths.ca_key if have_cert else paths.ca_cert
        raise ConfigError(f"{missing}: missing while its pair exists; restore it or use --force")
    key, cert = _self_signed_ca(f"hksz-gateway {park.upper()} dev CA", park, now)
    verb = "replaced" if have_cert or have_key else "created"
    _write_key(paths.ca_key, key)
    _write_public(paths.ca_cert, cert.public_bytes(serialization.Encoding.PEM))
    actions += [FileAction(paths.ca_cert, verb), FileAction(paths.ca_key, verb)]
    return key, cert, True


def _ensure_interception_ca(paths: ParkPaths, park: str, now: dt.datetime) -> str:
    """Create the park's interception CA unless present; ``created`` or ``kept``."""
    cert_path, key_path = paths.intercept_ca_cert, paths.intercept_ca_key
    have_cert, have_key = cert_path.exists(), key_path.exists()
    if have_cert and have_key:
        _load_ca_pair(cert_path, key_path, remedy="delete both files to issue a new CA")
        return "kept"
    if have_cert or have_key:
        missing = key_path if have_cert else cert_path
        raise ConfigError(
            f"{missing}: missing while its pair exists; restore it, or delete "
            f"{key_path if have_key else cert_path} to issue a new interception CA"
        )
    key, cert = _self_signed_ca(f"hksz-gateway {park.upper()} interception CA", park, now)
    # Key first: a run cut between the two writes leaves a key that no client
    # trusts yet, never a certificate someone could be told to trust without it.
    _write_key(key_path, key)
    _write_public(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return "created"


def _load_ca_pair(
    cert_path: Path, key_path: Path, *, remedy: str
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    ca_cert = load_certificates(cert_path)[0]
    try:
        ca_key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        raise ConfigError(f"{key_path}: not a readable unencrypted PEM key") from None
    cert_public = ca_cert.public_key()
    if (
        not isinstance(ca_key, ec.EllipticCurvePrivateKey)
        or not isinstance(cert_public, ec.EllipticCurvePublicKey)
        or ca_key.public_key().public_numbers() != cert_public.public_numbers()
    ):
        raise ConfigError(f"{key_path}: does not match {cert_path}; {remedy}")
    return ca_key, ca_cert


def _self_signed_ca(
    common_name: str, park: str, now: dt.datetime
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A new ECDSA P-256 root CA: pathLen 0 (it signs leaves only), keyCertSign and cRLSign."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name, park)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _issue_leaf(
    park: str,
    role: str,
    key: ec.EllipticCurvePrivateKey,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    now: dt.datetime,
) -> x509.Certificate:
    usage = ExtendedKeyUsageOID.SERVER_AUTH if role == "server" else ExtendedKeyUsageOID.CLIENT_AUTH
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in DNS_NAMES]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in IP_ADDRESSES]
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return sign_leaf(
        _name(f"gateway-{park}", park),
        key.public_key(),
        sans,
        usage,
        (ca_cert, ca_ski, ca_key),
        (now - CLOCK_SKEW, min(now + LEAF_VALIDITY, ca_cert.not_valid_after_utc)),
    )


def sign_leaf(
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    sans: list[x509.GeneralName],
    usage: x509.ObjectIdentifier,
    issuer: tuple[x509.Certificate, x509.SubjectKeyIdentifier, CertificateIssuerPrivateKeyTypes],
    validity: tuple[dt.datetime, dt.datetime],
) -> x509.Certificate:
    """An end-entity certificate: not a CA, ``digitalSignature`` only, one extended
    key usage, the SANs, its key identifier and its issuer's.

    Args:
        issuer: the issuing CA's certificate, subject key identifier and private key.
        validity: not before, not after.
    """
    ca_cert, ca_ski, ca_key = issuer
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )


def _name(common_name: str, park: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANISATION),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, park.upper()),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key_type(cert: x509.Certificate) -> str:
    key = cert.public_key()
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"ECDSA {key.curve.name}"
    return type(key).__name__.removesuffix("PublicKey").removeprefix("_")


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_private_file(path, pem, overwrite=True)


def _write_public(path: Path, data: bytes) -> None:
    """Write a public file atomically (temp file in the same folder, then rename)."""
    try:
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), PUBLIC_FILE_MODE)
            handle.write(data)
        os.replace(tmp_name, path)
    except OSError as exc:
        Path(tmp_name).unlink(missing_ok=True)
        raise ConfigError(f"{path}: cannot write: {exc.strerror}") from None
