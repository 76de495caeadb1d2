"""The interception CA: leaves clients accept, TLS policy, the bounded cache, nothing on disk."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
import ssl
import stat
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from gateway.crypto.certs import (
    CA_VALIDITY,
    ParkPaths,
    create_interception_ca,
    init_dev_pki,
    load_certificates,
)
from gateway.crypto.intercept import (
    DEFAULT_MAX_HOSTS,
    LEAF_VALIDITY,
    MAX_KEY_FILE_BYTES,
    InterceptionCA,
    canonical_host,
    tunnel_server_context,
)
from gateway.errors import ConfigError

#: Distinct SNI names a client cycles through in the cache tests (issue 18).
FLOOD_HOSTS = 10_000


@pytest.fixture(scope="module")
def ca_files(tmp_path_factory: pytest.TempPathFactory) -> ParkPaths:
    paths = ParkPaths(tmp_path_factory.mktemp("intercept") / "hk")
    create_interception_ca(paths.directory, "hk")
    return paths


@pytest.fixture(scope="module")
def ca(ca_files: ParkPaths) -> InterceptionCA:
    return InterceptionCA.load(ca_files.intercept_ca_cert, ca_files.intercept_ca_key)


def _client(cafile: Path | None, alpn: list[str] | None = None) -> ssl.SSLContext:
    """A client that trusts only ``cafile`` (nothing when None), hostname check on."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    assert context.check_hostname
    if cafile is not None:
        context.load_verify_locations(cafile=str(cafile))
    if alpn is not None:
        context.set_alpn_protocols(alpn)
    return context


def _handshake(
    server: ssl.SSLContext, client: ssl.SSLContext, name: str
) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    """Run a TLS handshake in memory; raise what the client (else the server) raised."""
    c, s, errors = _run_handshake(server, client, name)
    if "c" in errors:
        raise errors["c"]
    if "s" in errors:
        raise errors["s"]
    return c, s


def _run_handshake(
    server: ssl.SSLContext, client: ssl.SSLContext, name: str
) -> tuple[ssl.SSLObject, ssl.SSLObject, dict[str, ssl.SSLError]]:
    """Pump a handshake between two memory BIOs; each side's error under ``c`` / ``s``."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    c = client.wrap_bio(c_in, c_out, server_hostname=name)
    s = server.wrap_bio(s_in, s_out, server_side=True)
    done = {"c": False, "s": False}
    errors: dict[str, ssl.SSLError] = {}
    for _ in range(20):
        for side, obj in (("c", c), ("s", s)):
            if done[side] or side in errors:
                continue
            try:
                obj.do_handshake()
                done[side] = True
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as exc:
                errors[side] = exc
        s_in.write(c_out.read())
        c_in.write(s_out.read())
        if (done["c"] and done["s"]) or errors:
            break
    return c, s, errors


def _leaf(obj: ssl.SSLObject) -> x509.Certificate:
    der = obj.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def test_leaf_verifies_against_the_ca_with_the_host_name(
    ca: InterceptionCA, ca_files: ParkPaths
) -> None:
    client, _ = _handshake(
        ca.context_for("partner.example.org"),
        _client(ca_files.intercept_ca_cert),
        "partner.example.org",
    )
    leaf = _leaf(client)
    ca_cert = load_certificates(ca_files.intercept_ca_cert)[0]
    leaf.verify_directly_issued_by(ca_cert)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["partner.example.org"]
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature
    assert not usage.key_cert_sign
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    key = leaf.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert key.curve.name == "secp256r1"
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert lifetime == LEAF_VALIDITY + dt.timedelta(minutes=5)  # backdated for clock skew
    assert leaf.not_valid_before_utc < dt.datetime.now(dt.UTC) - dt.timedelta(minutes=4)
    # The chain sent is leaf + CA (get_unverified_chain is public from Python 3.13;
    # 3.11 has it on the private _sslobj, returning _ssl.Certificate objects).
    sslobj = getattr(client, "_sslobj", client)
    sent = [
        x509.load_der_x509_certificate(c.public_bytes(ssl._ssl.ENCODING_DER))  # type: ignore[attr-defined]
        for c in sslobj.get_unverified_chain()
    ]
    assert sent == [leaf, ca_cert]


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "2001:db8::7"])
def test_ip_address_hosts_get_an_ip_san(ca: InterceptionCA, ca_files: ParkPaths, host: str) -> None:
    client, _ = _handshake(ca.context_for(host), _client(ca_files.intercept_ca_cert), host)
    san = _leaf(client).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address(host)]
    assert san.get_values_for_type(x509.DNSName) == []


def test_serials_are_random_and_leaves_differ_per_host(ca: InterceptionCA) -> None:
    client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_context.check_hostname = False
    client_context.verify_mode = ssl.CERT_NONE
    serials = {
        _leaf(
            _handshake(ca.context_for(f"s{i}.example"), client_context, f"s{i}.example")[0]
        ).serial_number
        for i in range(8)
    }
    assert len(serials) == 8
    assert all(serial.bit_length() > 64 for serial in serials)


def test_a_client_not_trusting_the_ca_fails_its_handshake(
    ca: InterceptionCA, ca_files: ParkPaths, tmp_path: Path
) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(ca.context_for("partner.example.org"), _client(None), "partner.example.org")
    # Trusting another CA (the park's own dev CA) is no better.
    init_dev_pki(tmp_path)
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(
            ca.context_for("partner.example.org"),
            _client(tmp_path / "hk" / "ca.crt"),
            "partner.example.org",
        )
    # Nor does another host's leaf verify for this name.
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        _handshake(
            ca.context_for("other.example.org"),
            _client(ca_files.intercept_ca_cert),
            "partner.example.org",
        )


def test_alpn_offers_http11_only(ca: InterceptionCA, ca_files: ParkPaths) -> None:
    server = ca.context_for("partner.example.org")
    both = _client(ca_files.intercept_ca_cert, ["h2", "http/1.1"])
    client, _ = _handshake(server, both, "partner.example.org")
    assert client.selected_alpn_protocol() == "http/1.1"
    h2_only = _client(ca_files.intercept_ca_cert, ["h2"])
    client, _ = _handshake(server, h2_only, "partner.example.org")
    assert client.selected_alpn_protocol() is None


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
def test_tls11_is_refused(ca: InterceptionCA) -> None:
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname = False
    old.verify_mode = ssl.CERT_NONE
    # Let this client really send a TLS 1.1 hello (OpenSSL 3's level 1 forbids it).
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    old.minimum_version = ssl.TLSVersion.TLSv1
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    client, _, errors = _run_handshake(
        ca.context_for("partner.example.org"), old, "partner.example.org"
    )
    # The server read the hello and refused its version; the client got no session.
    assert errors["s"].reason == "UNSUPPORTED_PROTOCOL"
    assert client.version() is None


def test_tls12_gets_ecdhe_aead_only(ca: InterceptionCA, ca_files: ParkPaths) -> None:
    server = ca.context_for("partner.example.org")
    tls12 = _client(ca_files.intercept_ca_cert)
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    client, _ = _handshake(server, tls12, "partner.example.org")
    cipher = client.cipher()
    assert cipher is not None
    assert cipher[1] == "TLSv1.2"
    assert cipher[0].startswith("ECDHE-ECDSA-")
    assert "GCM" in cipher[0] or "CHACHA20" in cipher[0]
    cbc = _client(ca_files.intercept_ca_cert)
    cbc.maximum_version = ssl.TLSVersion.TLSv1_2
    cbc.set_ciphers("ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA")
    with pytest.raises(ssl.SSLError):
        _handshake(server, cbc, "partner.example.org")


def test_no_client_certificate_is_requested(ca: InterceptionCA) -> None:
    assert ca.context_for("partner.example.org").verify_mode == ssl.CERT_NONE


def test_a_real_loopback_handshake_answering_by_sni(
    ca: InterceptionCA, ca_files: ParkPaths
) -> None:
    """A base context can pick the leaf by SNI, else by the CONNECT host."""
    connect_host = "127.0.0.1"
    base = tunnel_server_context()

    def pick(obj: ssl.SSLObject | ssl.SSLSocket, name: str | None, _: ssl.SSLContext) -> None:
        obj.context = ca.context_for(name or connect_host)

    base.sni_callback = pick
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    served: list[str | None] = []

    def serve() -> None:
        for _ in range(2):
            conn, _ = listener.accept()
            with base.wrap_socket(conn, server_side=True) as tls:
                served.append(tls.selected_alpn_protocol())
                tls.sendall(tls.recv(5))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        for name in ("partner.example.org", connect_host):
            client = _client(ca_files.intercept_ca_cert, ["http/1.1"])
            with (
                socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
                client.wrap_socket(raw, server_hostname=name) as tls,
            ):
                tls.sendall(b"hello")
                assert tls.recv(5) == b"hello"
                san = _leaf_of(tls).extensions.get_extension_for_class(x509.SubjectAlternativeName)
                assert name in {str(v) for v in san.value.get_values_for_type(x509.DNSName)} | {
                    str(v) for v in san.value.get_values_for_type(x509.IPAddress)
                }
                assert tls.version() in {"TLSv1.2", "TLSv1.3"}
        thread.join(5)
    finally:
        listener.close()
    assert served == ["http/1.1", "http/1.1"]


def _leaf_of(tls: ssl.SSLSocket) -> x509.Certificate:
    der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def test_contexts_are_cached_per_canonical_host(ca_files: ParkPaths) -> None:
    ca = InterceptionCA.load(ca_files.intercept_ca_cert, ca_files.intercept_ca_key)
    first = ca.context_for("Partner.Example.org.")
    assert ca.context_for("partner.example.org") is first
    assert ca.context_for("::0001") is ca.context_for("::1")
    info = ca.cache_info()
    assert (info.hits, info.misses, info.size, info.max_hosts) == (2, 2, 2, DEFAULT_MAX_HOSTS)


def test_a_leaf_near_expiry_is_minted_anew(
    ca_files: ParkPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = InterceptionCA.load(ca_files.intercept_ca_cert, ca_files.intercept_ca_key)
    first = ca.context_for("partner.example.org")
    later = time.time() + LEAF_VALIDITY.total_seconds()
    monkeypatch.setattr(time, "time", lambda: later)
    assert ca.context_for("partner.example.org") is not first


@pytest.mark.slow
def test_the_cache_bound_holds_under_a_flood_of_names(ca_files: ParkPaths) -> None:
    ca = InterceptionCA.load(ca_files.intercept_ca_cert, ca_files.intercept_ca_key, max_hosts=64)
    for i in range(FLOOD_HOSTS):
        ca.context_for(f"flood-{i}.example.org")
    info = ca.cache_info()
    assert info.size == 64
    assert info.evictions == FLOOD_HOSTS - 64
    # Least recently used goes first: touching an old host keeps it.
    ca.context_for(f"flood-{FLOOD_HOSTS - 64}.example.org")
    ca.context_for("one-more.example.org")
    assert ca.cache_info().hits == 1
    ca.context_for(f"flood-{FLOOD_HOSTS - 64}.example.org")
    assert ca.cache_info().hits == 2
    ca.context_for(f"flood-{FLOOD_HOSTS - 63}.example.org")  # evicted by one-more
    assert ca.cache_info().hits == 2


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.slow
def test_memory_stays_bounded_under_10000_sni_names(ca_files: ParkPaths) -> None:
    """10,000 distinct names with the default bound: RSS grows by the 1,024 cached, no more.

    Measured (OpenSSL 3.0, Python 3.11): ~27 MB after the first 1,024 names,
    +0.6 MB more by 10,000; unbounded, the same flood took 265 MB.
    """
    ca = InterceptionCA.load(ca_files.intercept_ca_cert, ca_files.intercept_ca_key)
    before = _rss_kib()
    started = time.perf_counter()
    for i in range(DEFAULT_MAX_HOSTS):
        ca.context_for(f"mem-{i}.example.org")
    full = _rss_kib()
    for i in range(DEFAULT_MAX_HOSTS, FLOOD_HOSTS):
        ca.context_for(f"mem-{i}.example.org")
    after = _rss_kib()
    elapsed = time.perf_counter() - started
    assert ca.cache_info().size == DEFAULT_MAX_HOSTS
    print(
        f"\nRSS +{(full - before) / 1024:.1f} MiB for {DEFAULT_MAX_HOSTS} hosts, "
        f"+{(after - before) / 1024:.1f} MiB after {FLOOD_HOSTS}; "
        f"{elapsed / FLOOD_HOSTS * 1000:.2f} ms per mint"
    )
    # The 8,976 names past the bound cost (almost) nothing more: allocator slack only.
    assert after - full < (full - before) // 4 + 2048
    assert after - before < 64 * 1024  # 64 MiB: ~2x the measured 27 MiB


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_nothing_is_written_to_disk_and_no_descriptor_leaks(
    ca: InterceptionCA,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    places = [tmp_path, Path(tempfile.gettempdir()), Path("/tmp"), Path("/dev/shm")]
    listing = {place: set(os.listdir(place)) for place in places if place.is_dir()}
    fds = _fds()
    for i in range(50):
        ca.context_for(f"disk-{i}.example.org")
    assert _fds() == fds  # each memfd was closed right after loading
    assert {place: set(os.listdir(place)) for place in listing} == listing


def test_the_memfd_is_really_used_and_closed(
    ca: InterceptionCA, monkeypatch: pytest.MonkeyPatch
) -> None:
    opened: list[int] = []
    real = os.memfd_create

    def spy(name: str, flags: int = os.MFD_CLOEXEC) -> int:
        fd = real(name, flags)
        opened.append(fd)
        return fd

    monkeypatch.setattr(os, "memfd_create", spy)
    ca.context_for("memfd.example.org")
    assert len(opened) == 1
    try:  # closed: the number is free, or reused by something else
        target = os.readlink(f"/proc/self/fd/{opened[0]}")
    except FileNotFoundError:
        target = ""
    assert "hksz-intercept-leaf" not in target


@pytest.mark.parametrize(
    "host",
    [
        "",
        "*.example.org",
        "a" * 254,
        f"{'a' * 64}.example.org",
        "exa mple.org",
        "under_score.example",
        "-lead.example",
        "trail-.example",
        "a..b",
        ".",
        "[::1]",
        "fe80::1%eth0",
        "::g",
        "999.1.1.1",
        "1.2.3",
        "bücher.example",
        "host:443",
        "a/b",
    ],
)
def test_invalid_hosts_raise_value_error(ca: InterceptionCA, host: str) -> None:
    with pytest.raises(ValueError, match=r"host|IPv6") as caught:
        ca.context_for(host)
    if len(host) > 3:
        assert host not in str(caught.value)  # the client chose it: never echoed


def test_canonical_host_forms() -> None:
    assert canonical_host("Example.ORG.")[0] == "example.org"
    assert canonical_host("xn--bcher-kva.example")[0] == "xn--bcher-kva.example"
    assert canonical_host("10.0.0.1")[1] == x509.IPAddress(ipaddress.ip_address("10.0.0.1"))
    assert canonical_host("2001:DB8:0::1")[0] == "2001:db8::1"
    assert canonical_host("localhost")[1] == x509.DNSName("localhost")


def test_a_long_host_has_no_common_name_but_verifies(
    ca: InterceptionCA, ca_files: ParkPaths
) -> None:
    host = ".".join(["a" * 63] * 3) + ".example"
    client, _ = _handshake(ca.context_for(host), _client(ca_files.intercept_ca_cert), host)
    assert _leaf(client).subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME) == []


def test_key_file_readable_by_group_or_others_is_refused(
    ca_files: ParkPaths, tmp_path: Path
) -> None:
    key = tmp_path / "intercept-ca.key"
    key.write_bytes(ca_files.intercept_ca_key.read_bytes())
    for mode in (0o640, 0o604, 0o644):
        key.chmod(mode)
        with pytest.raises(ConfigError, match=r"intercept-ca.key: .*group or others"):
            InterceptionCA.load(ca_files.intercept_ca_cert, key)
    key.chmod(0o600)
    InterceptionCA.load(ca_files.intercept_ca_cert, key)


def test_key_that_is_not_a_regular_file_or_too_large_is_refused(
    ca_files: ParkPaths, tmp_path: Path
) -> None:
    fifo = tmp_path / "fifo.key"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(ConfigError, match=r"fifo.key: .*not a regular file"):
        InterceptionCA.load(ca_files.intercept_ca_cert, fifo)  # and does not block on it
    folder = tmp_path / "dir.key"
    folder.mkdir(mode=0o700)
    with pytest.raises(ConfigError, match=r"dir.key: .*not a regular file"):
        InterceptionCA.load(ca_files.intercept_ca_cert, folder)
    big = tmp_path / "big.key"
    big.write_bytes(b"x" * (MAX_KEY_FILE_BYTES + 1))
    big.chmod(0o600)
    with pytest.raises(ConfigError, match=r"big.key: .*over"):
        InterceptionCA.load(ca_files.intercept_ca_cert, big)
    with pytest.raises(ConfigError, match=r"missing.key: cannot read"):
        InterceptionCA.load(ca_files.intercept_ca_cert, tmp_path / "missing.key")


def test_certificate_must_be_a_ca_matching_the_key(ca_files: ParkPaths, tmp_path: Path) -> None:
    init_dev_pki(tmp_path / "pki")
    hk = ParkPaths(tmp_path / "pki" / "hk")
    # A leaf (CA:FALSE) with its own key: not a CA.
    with pytest.raises(ConfigError, match=r"server.crt: not a CA certificate"):
        InterceptionCA.load(hk.cert("server"), hk.key("server"))
    # The other park's interception key: does not match.
    with pytest.raises(ConfigError, match=r"intercept-ca.key: does not match"):
        InterceptionCA.load(ca_files.intercept_ca_cert, hk.intercept_ca_key)
    not_pem = tmp_path / "junk.key"
    not_pem.write_bytes(b"junk")
    not_pem.chmod(0o600)
    with pytest.raises(ConfigError, match=r"junk.key: not an unencrypted PEM"):
        InterceptionCA.load(ca_files.intercept_ca_cert, not_pem)


def test_create_interception_ca_makes_and_keeps_the_pair(tmp_path: Path) -> None:
    cert_path, key_path = create_interception_ca(tmp_path / "sz", "sz")
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cert_path.stat().st_mode) == 0o644
    cert = load_certificates(cert_path)[0]
    assert "hksz-gateway SZ interception CA" in cert.subject.rfc4514_string()
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca
    assert constraints.path_length == 0
    with pytest.raises(x509.ExtensionNotFound):
        cert.extensions.get_extension_for_class(x509.NameConstraints)
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert key.curve.name == "secp256r1"
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == CA_VALIDITY + dt.timedelta(
        minutes=5
    )
    before = cert_path.read_bytes(), key_path.read_bytes()
    assert create_interception_ca(tmp_path / "sz", "sz") == (cert_path, key_path)
    assert (cert_path.read_bytes(), key_path.read_bytes()) == before
    assert InterceptionCA.load(cert_path, key_path).certificate_pem == before[0]
    key_path.unlink()
    with pytest.raises(ConfigError, match=r"intercept-ca.key: missing"):
        create_interception_ca(tmp_path / "sz", "sz")


def test_a_subordinate_ca_sends_its_issuer_with_every_leaf(tmp_path: Path) -> None:
    """An organisation's root signs the interception CA: clients trust the root alone."""
    now = dt.datetime.now(dt.UTC)

    def ca_cert(
        name: str,
        key: ec.EllipticCurvePrivateKey,
        issuer: x509.Name,
        signer: ec.EllipticCurvePrivateKey,
    ) -> x509.Certificate:
        subject = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, name)])
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer if issuer.rdns else subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(signer, hashes.SHA256())
        )

    root_key, sub_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    root = ca_cert("Example Org Root", root_key, x509.Name([]), root_key)
    sub = ca_cert("Example Org DLP", sub_key, root.subject, root_key)
    (tmp_path / "root.pem").write_bytes(root.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "chain.pem").write_bytes(
        sub.public_bytes(serialization.Encoding.PEM) + root.public_bytes(serialization.Encoding.PEM)
    )
    key = tmp_path / "sub.key"
    key.write_bytes(
        sub_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key.chmod(0o600)
    ca = InterceptionCA.load(tmp_path / "chain.pem", key)
    client, _ = _handshake(
        ca.context_for("partner.example.org"), _client(tmp_path / "root.pem"), "partner.example.org"
    )
    assert _leaf(client).issuer == sub.subject
