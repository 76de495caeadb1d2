"""``gateway config check FILE`` (issue 16): every problem of a configuration in one run.

On the demo's real configurations (both roles, pinned mutual TLS, witnessing,
the shipped policies), then with their files broken one way each.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.server.demo import prepare_demo

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    # The shipped policies read the recipients from ../var/demo/: mirror that layout.
    shutil.copytree(REPO / "policies", tmp_path / "policies")
    prepare_demo(tmp_path / "var" / "demo", tmp_path / "policies")
    return tmp_path / "var" / "demo"


def check(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["config", "check", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_demo_configurations_are_ok(demo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for park in ("hk", "sz"):
        code, out, err = check(capsys, str(demo / f"{park}.toml"))
        assert code == 0, err
        assert out.startswith(f"{demo / park}.toml: ok (egress and ingress; ")
        # Nothing was created by checking: the files a first start makes are noted.
        assert "created at first start" in err
        assert not (demo / park / "secret").exists()
        assert not (demo / park / "audit").exists()


def test_every_broken_file_is_reported_in_one_run(
    demo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    certs = demo / "certs" / "hk"
    (certs / "server.key").write_text("not a key\n")  # the HK ingress's key
    (demo / "certs" / "sz" / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\nAAAA\n")
    (demo / "hk-ingress.agekey").write_text("AGE-SECRET-KEY-1NOTAKEY\n")
    secret = demo / "hk" / "secret"
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_bytes(b"short")
    secret.chmod(0o600)
    policy = demo.parent.parent / "policies" / "90-demo.yaml"
    policy.write_text(policy.read_text() + "\nrules:\n  - {id: x, action: maybe}\n")
    (certs / "intercept-ca.key").chmod(0o640)  # readable by the group: refused
    code, out, err = check(capsys, str(demo / "hk.toml"))
    assert code == 1, out
    problems = [line for line in err.splitlines() if line.startswith(f"{demo / 'hk.toml'}: ")]
    settings = [line.split(": ", 2)[1] for line in problems[:-1]]
    assert sorted(settings) == sorted(
        [
            "secret_file",
            "egress.upstream_tls",
            "egress.policy_dir",
            "egress.intercept",
            "ingress.tls",
            "ingress.identity",
        ]
    ), problems
    assert problems[-1] == f"{demo / 'hk.toml'}: 6 problems"
    assert "90-demo.yaml" in err  # the policy error names its file


def test_a_configuration_that_does_not_load_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[egress]\nport = 'eighty'\n")
    code, _, err = check(capsys, str(bad))
    assert code == 2
    assert err.count("\n") == 1
    assert "egress.port" in err


def test_a_group_readable_signing_key_is_refused(
    demo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, _ = check(capsys, str(demo / "hk.toml"))
    assert code == 0
    key = demo / "certs" / "hk" / "audit-ed25519.key"
    if not key.exists():
        pytest.fail("the demo makes the HK audit key")
    key.chmod(0o640)
    code, _, err = check(capsys, str(demo / "hk.toml"))
    assert code == 1
    assert "audit.signing_key:" in err


def test_the_ledger_password_file_is_checked_and_used(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.ledger.pg import require_pg

    url = require_pg()
    password = tmp_path / "ledger_password"
    password.write_text("not-needed-under-trust-auth\n")
    password.chmod(0o640)
    config = tmp_path / "gw.toml"
    config.write_text(f'ledger_url = "{url}"\nledger_password_file = "ledger_password"\n')
    code, _, err = check(capsys, str(config), "--connect")
    assert code == 1
    assert "ledger_password_file:" in err
    assert "accessible by group or others (mode 0640); run chmod 600" in err
    password.chmod(0o600)
    code, out, err = check(capsys, str(config), "--connect")
    assert code == 0, err
    assert "ok (no listener;" in out
    password.write_text("")
    code, _, err = check(capsys, str(config))
    assert code == 1
    assert "ledger password file is empty" in err


def test_a_held_directory_that_cannot_be_one_is_reported(
    demo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Replicas keep held reviews in egress.held_dir (issue 16): a path that is a file fails."""
    config = demo / "hk.toml"
    taken = demo / "not-a-directory"
    taken.write_text("a file\n")
    config.write_text(
        config.read_text().replace("[egress]\n", f'[egress]\nheld_dir = "{taken}"\n', 1)
    )
    code, _, err = check(capsys, str(config))
    assert code == 1
    assert "egress.held_dir:" in err
