"""``gateway keys``, ``encrypt``, ``decrypt`` and ``certs``: age files and the dev PKI.

The flags follow ``age`` and ``age-keygen`` so that operators can switch
between them: ``-r``/``-R`` recipients, ``-i`` identities, ``-o`` output,
stdin/stdout when the paths are omitted. Files are processed in constant
memory through the sans-I/O objects of :mod:`gateway.crypto.age`. An output
file is written to a temporary file beside it and renamed only on success,
so a failed run never leaves a partial file behind.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from gateway.cli import EXIT_FINDING, EXIT_OK, EXIT_USAGE
from gateway.crypto.age import AgeDecryptor, AgeEncryptor
from gateway.crypto.certs import (
    INTERCEPT_CA_CERT_NAME,
    PARKS,
    CertInfo,
    ParkPaths,
    describe_certificate,
    init_dev_pki,
    load_certificates,
    spki_pin,
)
from gateway.crypto.errors import AgeError, KeyFormatError
from gateway.crypto.keys import (
    X25519Identity,
    X25519Recipient,
    identity_file_text,
    load_identities,
    load_recipients,
    write_private_file,
)
from gateway.crypto.stream import CHUNK_SIZE
from gateway.errors import ConfigError

#: Bytes read per step: one age chunk, so each step returns at most one sealed
#: or opened chunk without joining and allocates less than glibc's mmap
#: threshold. 1 MiB reads measured 10-30 % slower on a loaded machine: each call
#: can page-fault a fresh 1 MiB result (python -m gateway.crypto.bench --step-kib).
READ_SIZE = CHUNK_SIZE
#: Where ``gateway certs init`` writes when no folder is given: under the
#: git-ignored ``var/`` so dev private keys never land in the repository.
DEFAULT_CERTS_DIR = Path("var/certs")
#: Decrypted output files hold plaintext that may be personal data: owner only.
PLAINTEXT_FILE_MODE = 0o600
#: What ``gateway certs trust-help`` explains by default: the interception CA
#: ``make run`` makes for the Hong Kong egress, the demo's ``HTTPS_PROXY``
#: (gateway.server.demo's DEMO_DIR and HK_EGRESS_PORT; not imported, the
#: server package is heavy; tests/cli/test_crypto.py checks they agree).
DEFAULT_TRUST_CA = Path("var/demo/certs/hk") / INTERCEPT_CA_CERT_NAME
DEFAULT_PROXY_URL = "http://127.0.0.1:8080"
#: Where update-ca-certificates and update-ca-trust look for added anchors.
DEBIAN_ANCHORS = Path("/usr/local/share/ca-certificates")
RHEL_ANCHORS = Path("/etc/pki/ca-trust/source/anchors")
#: The system bundles to concatenate with the CA for requests and httpx.
SYSTEM_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")

_STDIO = "-"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``keys``, ``encrypt``, ``decrypt`` and ``certs``."""
    keys = subparsers.add_parser("keys", help="age X25519 key pairs")
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="COMMAND")
    keys_sub.required = True
    new = keys_sub.add_parser(
        "new",
        help="generate an age identity (like age-keygen)",
        description="Generate an age X25519 identity. With -o, write it to FILE (mode 0600, "
        "never overwriting) and print the public age1… recipient; without -o, write the "
        "identity to stdout and the recipient to stderr.",
    )
    new.add_argument("-o", "--output", metavar="FILE", help="identity file to create")
    new.set_defaults(handler=_keys_new)
    public = keys_sub.add_parser(
        "public",
        help="print the recipients of an identity file (like age-keygen -y)",
    )
    public.add_argument("identity", metavar="IDENTITY_FILE")
    public.set_defaults(handler=_keys_public)

    enc = subparsers.add_parser(
        "encrypt",
        help="encrypt to age recipients",
        description="Encrypt IN (stdin when omitted) as an age v1 file to OUT (stdout when "
        "omitted), in constant memory.",
    )
    enc.add_argument(
        "-r",
        "--recipient",
        action="append",
        default=[],
        metavar="RECIPIENT",
        help="an age1… recipient (repeatable)",
    )
    enc.add_argument(
        "-R",
        "--recipients-file",
        action="append",
        default=[],
        metavar="FILE",
        help="a file of age1… recipients, one per line (repeatable)",
    )
    enc.add_argument("-o", "--output", metavar="OUT", help="output file (default stdout)")
    enc.add_argument("input", nargs="?", metavar="IN", help="input file (default stdin)")
    enc.set_defaults(handler=_encrypt)

    dec = subparsers.add_parser(
        "decrypt",
        help="decrypt an age file",
        description="Decrypt the age file IN (stdin when omitted) to OUT (stdout when "
        "omitted). Plaintext is released only chunk by verified chunk; on failure no "
        "output file is left, and output already written to stdout is cut short.",
    )
    dec.add_argument(
        "-i",
        "--identity",
        action="append",
        default=[],
        required=True,
        metavar="IDENTITY",
        help="an age identity file (repeatable)",
    )
    dec.add_argument("-o", "--output", metavar="OUT", help="output file (default stdout)")
    dec.add_argument("input", nargs="?", metavar="IN", help="input file (default stdin)")
    dec.set_defaults(handler=_decrypt)

    certs = subparsers.add_parser("certs", help="development CA and TLS certificates")
    certs_sub = certs.add_subparsers(dest="certs_command", metavar="COMMAND")
    certs_sub.required = True
    init = certs_sub.add_parser(
        "init",
        help="create the dev CAs and certificates of both parks",
        description="Create, for each park (hk, sz), a dev CA, server and client "
        "certificates (ECDSA P-256, SANs localhost/127.0.0.1/::1), an Ed25519 audit "
        "key and the egress's interception CA (intercept-ca.pem/.key, for HTTPS_PROXY "
        "clients), and DIR/pins.toml with the leaves' public-key pins, which it also "
        "prints as the config lines that pin each twin. Existing files are kept; --force "
        "re-issues the dev CAs and certificates, never the audit keys or interception CAs.",
    )
    init.add_argument(
        "directory",
        nargs="?",
        type=Path,
        default=DEFAULT_CERTS_DIR,
        metavar="DIR",
        help=f"output folder (default {DEFAULT_CERTS_DIR})",
    )
    init.add_argument(
        "--force",
        action="store_true",
        help="re-issue the dev CAs and certificates (audit keys and interception CAs are kept)",
    )
    init.set_defaults(handler=_certs_init)
    trust = certs_sub.add_parser(
        "trust-help",
        help="print how to make clients trust an interception CA",
        description="Print, for the interception CA in FILE, the commands that make "
        "HTTPS_PROXY clients trust it: the Debian/Ubuntu, RHEL and macOS system stores, "
        "Python requests/httpx, curl, and the HTTPS_PROXY line itself.",
    )
    trust.add_argument(
        "--ca",
        type=Path,
        default=DEFAULT_TRUST_CA,
        metavar="FILE",
        help=f"the interception CA certificate (default {DEFAULT_TRUST_CA}, made by make run)",
    )
    trust.add_argument(
        "--proxy",
        default=DEFAULT_PROXY_URL,
        metavar="URL",
        help=f"the egress for HTTPS_PROXY (default {DEFAULT_PROXY_URL}, the demo's HK egress)",
    )
    trust.set_defaults(handler=_certs_trust_help)
    show = certs_sub.add_parser("show", help="print a certificate's subject, SANs and validity")
    show.add_argument("files", nargs="+", type=Path, metavar="FILE")
    show.set_defaults(handler=_certs_show)


def _keys_new(args: argparse.Namespace) -> int:
    identity = X25519Identity.generate()
    text = identity_file_text(identity)
    recipient = identity.recipient.encode()
    if args.output in (None, _STDIO):
        sys.stdout.write(text)
        sys.stdout.flush()
        print(f"Public key: {recipient}", file=sys.stderr)
        return EXIT_OK
    write_private_file(args.output, text.encode("ascii"))
    print(recipient)
    return EXIT_OK


def _keys_public(args: argparse.Namespace) -> int:
    for identity in load_identities(args.identity):
        print(identity.recipient.encode())
    return EXIT_OK


def _encrypt(args: argparse.Namespace) -> int:
    recipients: list[X25519Recipient] = []
    for text in args.recipient:
        try:
            recipients.append(X25519Recipient.parse(text))
        except KeyFormatError as exc:
            raise KeyFormatError(f"encrypt: -r: {exc.detail}") from None
    for path in args.recipients_file:
        recipients.extend(load_recipients(path))
    if not recipients:
        print("gateway: encrypt: give at least one recipient with -r or -R", file=sys.stderr)
        return EXIT_USAGE
    to_stdout = args.output in (None, _STDIO)
    if to_stdout and sys.stdout.isatty():
        print(
            "gateway: encrypt: refusing to write binary ciphertext to a terminal; "
            "use -o FILE or redirect stdout",
            file=sys.stderr,
        )
        return EXIT_USAGE
    encryptor = AgeEncryptor(recipients)
    with _input(args.input) as src, _output(args.output, mode=None) as dst:
        dst.write(encryptor.header())
        _pump(src, dst, encryptor.update, args.input)
        dst.write(encryptor.finish())
    return EXIT_OK


def _decrypt(args: argparse.Namespace) -> int:
    identities: list[X25519Identity] = []
    for path in args.identity:
        identities.extend(load_identities(path))
    decryptor = AgeDecryptor(identities)
    source = args.input or "<stdin>"
    to_stdout = args.output in (None, _STDIO)
    try:
        with _input(args.input) as src, _output(args.output, mode=PLAINTEXT_FILE_MODE) as dst:
            _pump(src, dst, decryptor.feed, args.input)
            dst.write(decryptor.finish())
    except AgeError as exc:
        aftermath = (
            "plaintext already written to stdout was cut short"
            if to_stdout
            else f"{args.output} was not written"
        )
        print(f"gateway: decrypt: {source}: {exc.detail}; {aftermath}", file=sys.stderr)
        return EXIT_FINDING
    return EXIT_OK


def _certs_init(args: argparse.Namespace) -> int:
    directory: Path = args.directory
    for action in init_dev_pki(directory, force=args.force):
        print(f"{action.action:8} {action.path}")
    print(
        f"each park's gateway verifies client certificates against the other park's CA "
        f"(e.g. the sz ingress uses client_ca = {directory / 'hk' / 'ca.crt'})"
    )
    # What an operator pastes: each park pins the *other* park's keys.
    print("and pins the other park's public keys (SPKI SHA-256, also in pins.toml):")
    for park, other in zip(PARKS, reversed(PARKS), strict=True):
        theirs = ParkPaths(directory / other)
        client = spki_pin(load_certificates(theirs.cert("client"))[0])
        server = spki_pin(load_certificates(theirs.cert("server"))[0])
        print(f'  {park}: [ingress] twin_spki = ["{client}"]')
        print(f'  {park}: [egress.upstream_tls] pin_spki = ["{server}"]')
    print(
        "HTTPS_PROXY clients must trust the egress's interception CA "
        f"({directory / PARKS[0] / INTERCEPT_CA_CERT_NAME} for the {PARKS[0]} egress): "
        f"gateway certs trust-help --ca FILE"
    )
    return EXIT_OK


def _certs_trust_help(args: argparse.Namespace) -> int:
    path: Path = args.ca
    if not path.exists() and path == DEFAULT_TRUST_CA:
        print(
            f"gateway: certs trust-help: {path}: no such file; run make run (or gateway "
            "certs init DIR) first, or name the CA with --ca FILE",
            file=sys.stderr,
        )
        return EXIT_USAGE
    certs = load_certificates(path)
    info = describe_certificate(certs[0])
    if not info.is_ca:
        raise ConfigError(f"{path}: not a CA certificate; give the interception CA (--ca)")
    print(_trust_text(path.resolve(), info, args.proxy))
    return EXIT_OK


def _trust_text(ca: Path, info: CertInfo, proxy: str) -> str:
    """The trust instructions for ``ca``, one block per client family."""
    # The name under the system anchors: update-ca-certificates reads only *.crt;
    # the fingerprint keeps the two parks' CAs (and a re-issued one) apart.
    anchor = f"hksz-gateway-intercept-{info.sha256_fingerprint.replace(':', '')[:8].lower()}.crt"
    bundle = next((b for b in SYSTEM_BUNDLES if Path(b).is_file()), SYSTEM_BUNDLES[0])
    own = "~/.config/hksz-gateway/ca-bundle.pem"
    return f"""Interception CA {ca}
  subject:  {info.subject}
  SHA-256:  {info.sha256_fingerprint}
  expires:  {info.not_after:%Y-%m-%d}
It can vouch for ANY host name: trust it only where the gateway is meant to
inspect HTTPS (the research hosts that send through it), never elsewhere.

Send through the gateway (every client reads it; the CONNECT tunnel does the rest):
  export HTTPS_PROXY={proxy}

Debian / Ubuntu system store (curl, wget, git, most tools):
  sudo cp {ca} {DEBIAN_ANCHORS}/{anchor}
  sudo update-ca-certificates
  # undo: sudo rm {DEBIAN_ANCHORS}/{anchor} && sudo update-ca-certificates --fresh

RHEL / Fedora / Rocky system store:
  sudo cp {ca} {RHEL_ANCHORS}/{anchor}
  sudo update-ca-trust
  # undo: sudo rm {RHEL_ANCHORS}/{anchor} && sudo update-ca-trust

macOS (System keychain; browsers and curl use it, Python does not):
  sudo security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain {ca}
  # undo: sudo security remove-trusted-cert -d {ca}

Python requests / httpx: they use certifi's bundle, not the system store. The
variables below REPLACE that bundle, so give them the system bundle plus the CA
(hosts reached without the proxy, NO_PROXY, must still verify):
  mkdir -p ~/.config/hksz-gateway
  cat {bundle} {ca} > {own}
  export REQUESTS_CA_BUNDLE={own}   # requests
  export SSL_CERT_FILE={own}        # httpx, aiohttp, Go tools (rclone)

curl (when the CA is not in the system store):
  curl --cacert {ca} -T FILE https://HOST/...
  export CURL_CA_BUNDLE={ca}   # for every curl; replaces its bundle

Node.js adds rather than replaces: export NODE_EXTRA_CA_CERTS={ca}
"""


def _certs_show(args: argparse.Namespace) -> int:
    now = dt.datetime.now(dt.UTC)
    for path in args.files:
        certs = load_certificates(path)
        for index, cert in enumerate(certs, start=1):
            info = describe_certificate(cert)
            suffix = f" (certificate {index} of {len(certs)})" if len(certs) > 1 else ""
            seconds = info.seconds_to_expiry(now)
            days = int(abs(seconds) // 86400)
            expiry = f"in {days} days" if seconds >= 0 else f"EXPIRED {days} days ago"
            sans = [f"DNS:{n}" for n in info.dns_names] + [f"IP:{ip}" for ip in info.ip_addresses]
            print(f"{path}{suffix}")
            print(f"  subject:     {info.subject}")
            print(f"  issuer:      {info.issuer}")
            print(f"  serial:      {info.serial:x}")
            print(f"  SANs:        {', '.join(sans) or '(none)'}")
            print(f"  not before:  {info.not_before.isoformat()}")
            print(f"  not after:   {info.not_after.isoformat()}")
            print(f"  expires:     {expiry}")
            print(f"  key:         {info.key_type}")
            print(f"  CA:          {'yes' if info.is_ca else 'no'}")
            print(f"  SHA-256:     {info.sha256_fingerprint}")
            print(f"  SPKI pin:    {info.spki_sha256}")
    return EXIT_OK


def _pump(src: BinaryIO, dst: BinaryIO, step: Callable[[bytes], bytes], name: str | None) -> None:
    """Move ``src`` through ``step`` into ``dst``, READ_SIZE bytes at a time."""
    read = getattr(src, "read1", src.read)
    while True:
        try:
            data = read(READ_SIZE)
        except OSError as exc:
            raise ConfigError(f"{name or '<stdin>'}: cannot read: {exc.strerror}") from None
        if not data:
            return
        out = step(data)
        if out:
            dst.write(out)


@contextmanager
def _input(path: str | None) -> Iterator[BinaryIO]:
    if path in (None, _STDIO):
        yield sys.stdin.buffer
        return
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below, errors mapped first
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    with handle:
        yield handle


@contextmanager
def _output(path: str | None, *, mode: int | None) -> Iterator[BinaryIO]:
    """Stdout, or a temporary file beside ``path`` renamed over it on success.

    Args:
        path: target file, or ``None``/``-`` for stdout.
        mode: file mode of the result; ``None`` for the umask default (0666 & ~umask).
    """
    if path in (None, _STDIO):
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    target = Path(path)
    try:
        fd, tmp_name = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=".partial"
        )
    except OSError as exc:
        raise ConfigError(f"{target}: cannot write: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), _umask_mode() if mode is None else mode)
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except OSError as exc:
        Path(tmp_name).unlink(missing_ok=True)
        raise ConfigError(f"{target}: cannot write: {exc.strerror}") from None
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def _umask_mode() -> int:
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask
