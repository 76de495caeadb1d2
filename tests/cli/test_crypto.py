"""``gateway keys|encrypt|decrypt|certs``: files, pipes, failures, no partial output."""

from __future__ import annotations

import io
import os
import stat
import subprocess
import sys
from pathlib import Path

import pyrage
import pytest

from gateway.cli import main
from gateway.crypto.certs import describe_certificate, load_certificates, spki_pin
from gateway.crypto.keys import X25519Identity

GATEWAY = [sys.executable, "-m", "gateway"]


class _Stdio(io.TextIOWrapper):
    """A text stream over bytes, standing in for a pipe (``isatty`` as asked)."""

    def __init__(self, data: bytes = b"", *, tty: bool = False) -> None:
        super().__init__(io.BytesIO(data), encoding="utf-8")
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def _call(*args: str, stdin: bytes = b"", tty: bool = False) -> tuple[int, bytes, str]:
    """Run ``gateway`` in-process with pipes for stdin/stdout: (exit code, stdout, stderr)."""
    saved = sys.stdin, sys.stdout, sys.stderr
    out, err = _Stdio(tty=tty), io.StringIO()
    sys.stdin, sys.stdout, sys.stderr = _Stdio(stdin), out, err
    try:
        code = main(list(args))
        out.flush()
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved
    buffer = out.buffer
    assert isinstance(buffer, io.BytesIO)
    return code, buffer.getvalue(), err.getvalue()


@pytest.fixture
def identity_file(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "id.agekey"
    assert main(["keys", "new", "-o", str(path)]) == 0
    (recipient,) = {
        line.split(": ")[1] for line in path.read_text().splitlines() if "public" in line
    }
    return path, recipient


def test_keys_new_writes_0600_prints_recipient_and_refuses_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "key.txt"
    assert main(["keys", "new", "-o", str(path)]) == 0
    recipient = capsys.readouterr().out.strip()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    identity = X25519Identity.parse(path.read_text().splitlines()[-1])
    assert identity.recipient.encode() == recipient
    before = path.read_bytes()
    assert main(["keys", "new", "-o", str(path)]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err
    assert str(path) in err
    assert err.count("\n") == 1
    assert path.read_bytes() == before


def test_keys_new_to_stdout_and_keys_public(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "new"]) == 0
    captured = capsys.readouterr()
    identity = X25519Identity.parse(captured.out.splitlines()[-1])
    assert captured.err.strip() == f"Public key: {identity.recipient}"
    path = tmp_path / "id"
    path.write_text(captured.out)
    assert main(["keys", "public", str(path)]) == 0
    assert capsys.readouterr().out.strip() == identity.recipient.encode()


def test_file_round_trip_with_r_and_R(tmp_path: Path, identity_file: tuple[Path, str]) -> None:
    key, recipient = identity_file
    other = X25519Identity.generate()
    recipients = tmp_path / "recipients.txt"
    recipients.write_text(f"# partner\n{other.recipient}\n")
    plaintext = os.urandom(200_000)
    (tmp_path / "in.bin").write_bytes(plaintext)
    out, back = tmp_path / "out.age", tmp_path / "back.bin"
    assert (
        main(
            [
                "encrypt",
                "-r",
                recipient,
                "-R",
                str(recipients),
                "-o",
                str(out),
                str(tmp_path / "in.bin"),
            ]
        )
        == 0
    )
    assert main(["decrypt", "-i", str(key), "-o", str(back), str(out)]) == 0
    assert back.read_bytes() == plaintext
    assert stat.S_IMODE(back.stat().st_mode) == 0o600  # plaintext: owner only
    # Both recipients can open it, including with an independent implementation.
    assert (
        pyrage.decrypt(out.read_bytes(), [pyrage.x25519.Identity.from_str(other.encode())])
        == plaintext
    )


def test_real_pipe_between_two_processes(tmp_path: Path, identity_file: tuple[Path, str]) -> None:
    """``gateway encrypt < file | gateway decrypt``: real stdin/stdout pipes."""
    key, recipient = identity_file
    plaintext = os.urandom(150_000)
    source = tmp_path / "plain.bin"
    source.write_bytes(plaintext)
    with (
        source.open("rb") as stdin,
        subprocess.Popen(
            [*GATEWAY, "encrypt", "-r", recipient],
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        ) as enc,
        subprocess.Popen(
            [*GATEWAY, "decrypt", "-i", str(key)],
            stdin=enc.stdout,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        ) as dec,
    ):
        assert enc.stdout is not None
        enc.stdout.close()  # the decrypt process owns the read end now
        output, dec_err = dec.communicate(timeout=60)
        _, enc_err = enc.communicate(timeout=60)
    assert enc.returncode == 0, enc_err
    assert dec.returncode == 0, dec_err
    assert output == plaintext


def test_stdin_to_stdout_in_process(identity_file: tuple[Path, str]) -> None:
    key, recipient = identity_file
    plaintext = os.urandom(150_000)
    code, ciphertext, err = _call("encrypt", "-r", recipient, stdin=plaintext)
    assert code == 0, err
    assert ciphertext.startswith(b"age-encryption.org/v1\n")
    code, output, err = _call("decrypt", "-i", str(key), stdin=ciphertext)
    assert (code, output, err) == (0, plaintext, "")


def test_decrypt_failure_leaves_no_output_file(
    tmp_path: Path, identity_file: tuple[Path, str]
) -> None:
    key, recipient = identity_file
    src = tmp_path / "in.bin"
    src.write_bytes(os.urandom(300_000))
    encrypted = tmp_path / "in.age"
    assert main(["encrypt", "-r", recipient, "-o", str(encrypted), str(src)]) == 0
    damaged = tmp_path / "damaged.age"
    data = bytearray(encrypted.read_bytes())
    data[-100] ^= 1  # in the final chunk: earlier chunks verify and are written first
    damaged.write_bytes(bytes(data))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, _, message = _call(
        "decrypt", "-i", str(key), "-o", str(out_dir / "plain.bin"), str(damaged)
    )
    assert code == 1
    assert os.listdir(out_dir) == []  # neither the target nor a temporary file
    assert message.count("\n") == 1
    assert "Traceback" not in message
    assert "damaged.age" in message
    assert "was not written" in message


def test_decrypt_failure_to_stdout_says_output_was_cut_short(
    identity_file: tuple[Path, str],
) -> None:
    key, recipient = identity_file
    plaintext = os.urandom(200_000)
    _, ciphertext, _ = _call("encrypt", "-r", recipient, stdin=plaintext)
    code, output, err = _call("decrypt", "-i", str(key), stdin=ciphertext[:-1000])
    assert code == 1
    assert "<stdin>" in err
    assert "cut short" in err
    assert err.count("\n") == 1
    assert plaintext.startswith(output)
    assert 0 < len(output) < len(plaintext)


def test_wrong_identity_and_bad_inputs(
    tmp_path: Path, identity_file: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    key, recipient = identity_file
    (tmp_path / "p").write_bytes(b"data")
    assert (
        main(["encrypt", "-r", recipient, "-o", str(tmp_path / "p.age"), str(tmp_path / "p")]) == 0
    )
    stranger = tmp_path / "stranger"
    assert main(["keys", "new", "-o", str(stranger)]) == 0
    capsys.readouterr()
    assert (
        main(["decrypt", "-i", str(stranger), "-o", str(tmp_path / "x"), str(tmp_path / "p.age")])
        == 1
    )
    assert "no identity matches" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    # Usage and I/O errors: exit 2, one line naming the culprit.
    assert main(["encrypt", "-r", "age1nonsense", str(tmp_path / "p")]) == 2
    assert "invalid age recipient" in capsys.readouterr().err
    assert (
        main(["encrypt", "-r", recipient, "-o", str(tmp_path / "o"), str(tmp_path / "missing")])
        == 2
    )
    assert "missing: cannot read" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    secret = key.read_text().splitlines()[-1]
    broken = tmp_path / "broken.key"
    broken.write_text(f"# comment\n{secret[:-2]}\n")
    assert main(["decrypt", "-i", str(broken), str(tmp_path / "p.age")]) == 2
    err = capsys.readouterr().err
    assert f"{broken}:2:" in err
    assert secret[:-2] not in err
    assert main(["encrypt", str(tmp_path / "p")]) == 2
    assert "at least one recipient" in capsys.readouterr().err


def test_encrypt_refuses_to_write_ciphertext_to_a_terminal(
    identity_file: tuple[Path, str],
) -> None:
    _, recipient = identity_file
    code, output, err = _call("encrypt", "-r", recipient, stdin=b"x", tty=True)
    assert code == 2
    assert output == b""
    assert "terminal" in err


def test_certs_init_and_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "certs"
    assert main(["certs", "init", str(target)]) == 0
    out = capsys.readouterr().out
    assert "created" in out
    assert str(target / "hk" / "ca.crt") in out
    assert main(["certs", "init", str(target)]) == 0
    assert "created" not in capsys.readouterr().out.split("each park")[0]
    assert main(["certs", "show", str(target / "sz" / "server.crt")]) == 0
    shown = capsys.readouterr().out
    for expected in (
        "subject:     CN=gateway-sz",
        "issuer:      CN=hksz-gateway SZ dev CA",
        "DNS:localhost, IP:127.0.0.1, IP:::1",
        "expires:     in 89 days",
        "SHA-256:",
    ):
        assert expected in shown
    assert main(["certs", "show", str(tmp_path / "none.crt")]) == 2
    assert "none.crt: cannot read" in capsys.readouterr().err


def test_certs_init_prints_the_pins_each_park_pastes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "certs"
    assert main(["certs", "init", str(target)]) == 0
    out = capsys.readouterr().out
    pin = {
        (park, role): spki_pin(load_certificates(target / park / f"{role}.crt")[0])
        for park in ("hk", "sz")
        for role in ("server", "client")
    }
    # Each park pins the other's keys: the sz ingress the hk client, and so on.
    assert f'sz: [ingress] twin_spki = ["{pin["hk", "client"]}"]' in out
    assert f'sz: [egress.upstream_tls] pin_spki = ["{pin["hk", "server"]}"]' in out
    assert f'hk: [ingress] twin_spki = ["{pin["sz", "client"]}"]' in out
    assert f'hk: [egress.upstream_tls] pin_spki = ["{pin["sz", "server"]}"]' in out
    assert f"created  {target / 'pins.toml'}" in out
    assert main(["certs", "show", str(target / "sz" / "client.crt")]) == 0
    assert f"SPKI pin:    {pin['sz', 'client']}" in capsys.readouterr().out


def test_certs_init_default_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = _call("certs", "init")
    assert code == 0, err
    assert (tmp_path / "var" / "certs" / "hk" / "server.crt").is_file()


def test_certs_init_makes_each_park_an_interception_ca(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "certs"
    assert main(["certs", "init", str(target)]) == 0
    out = capsys.readouterr().out
    for park in ("hk", "sz"):
        assert f"created  {target / park / 'intercept-ca.pem'}" in out
        assert f"created  {target / park / 'intercept-ca.key'}" in out
        assert stat.S_IMODE((target / park / "intercept-ca.key").stat().st_mode) == 0o600
    assert "gateway certs trust-help" in out
    before = (target / "hk" / "intercept-ca.pem").read_bytes()
    assert main(["certs", "init", "--force", str(target)]) == 0
    assert f"kept     {target / 'hk' / 'intercept-ca.pem'}" in capsys.readouterr().out
    assert (target / "hk" / "intercept-ca.pem").read_bytes() == before


def test_certs_trust_help_names_the_file_in_every_recipe(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "certs"
    assert main(["certs", "init", str(target)]) == 0
    capsys.readouterr()
    ca = target / "sz" / "intercept-ca.pem"
    assert main(["certs", "trust-help", "--ca", str(ca), "--proxy", "http://127.0.0.1:9080"]) == 0
    out = capsys.readouterr().out
    fingerprint = describe_certificate(load_certificates(ca)[0]).sha256_fingerprint
    anchor = f"hksz-gateway-intercept-{fingerprint.replace(':', '')[:8].lower()}.crt"
    for expected in (
        "CN=hksz-gateway SZ interception CA",
        fingerprint,
        "export HTTPS_PROXY=http://127.0.0.1:9080",
        f"sudo cp {ca} /usr/local/share/ca-certificates/{anchor}",
        "sudo update-ca-certificates",
        f"sudo cp {ca} /etc/pki/ca-trust/source/anchors/{anchor}",
        "sudo update-ca-trust",
        f"security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain {ca}",
        "export REQUESTS_CA_BUNDLE=",
        "export SSL_CERT_FILE=",
        "REPLACE",
        f"curl --cacert {ca}",
        f"export CURL_CA_BUNDLE={ca}",
    ):
        assert expected in out, expected
    # The bundle for requests/httpx is the system bundle and the CA, in that order.
    assert any(
        line.strip().startswith("cat /etc/") and f" {ca} > " in line for line in out.splitlines()
    )


def test_certs_trust_help_refuses_what_is_not_a_ca(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "certs"
    assert main(["certs", "init", str(target)]) == 0
    capsys.readouterr()
    assert main(["certs", "trust-help", "--ca", str(target / "hk" / "server.crt")]) == 2
    assert "server.crt: not a CA certificate" in capsys.readouterr().err
    assert main(["certs", "trust-help", "--ca", str(target / "hk" / "intercept-ca.key")]) == 2
    assert "intercept-ca.key: not a PEM or DER" in capsys.readouterr().err
    # No --ca and no demo yet: says how to make one.
    monkeypatch.chdir(tmp_path)
    assert main(["certs", "trust-help"]) == 2
    assert "make run" in capsys.readouterr().err


def test_certs_trust_help_defaults_are_the_demos() -> None:
    from gateway.cli.crypto import DEFAULT_PROXY_URL, DEFAULT_TRUST_CA
    from gateway.server.demo import DEMO_DIR, HK_EGRESS_PORT

    assert DEFAULT_TRUST_CA == DEMO_DIR / "certs" / "hk" / "intercept-ca.pem"
    assert f"http://127.0.0.1:{HK_EGRESS_PORT}" == DEFAULT_PROXY_URL
