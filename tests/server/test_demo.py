"""``gateway demo`` configs: the SZ ingress pins the HK gateway's client certificate."""

from __future__ import annotations

from pathlib import Path

from cryptography.x509.oid import NameOID

from gateway.crypto.certs import ParkPaths, load_certificates
from gateway.server.config import load_settings
from gateway.server.demo import prepare_demo


def _hk_client_cn(demo_root: Path) -> str:
    cert = load_certificates(ParkPaths(demo_root / "certs" / "hk").cert("client"))[0]
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def test_the_demo_ingress_pins_the_hk_client_certificate(tmp_path: Path) -> None:
    demo = prepare_demo(tmp_path / "demo", tmp_path / "policies")
    settings = load_settings(demo.sz_config)
    assert settings.ingress is not None
    assert settings.ingress.twin_names == (_hk_client_cn(demo.root),)


def test_a_demo_config_from_before_pinning_is_remade(tmp_path: Path) -> None:
    demo = prepare_demo(tmp_path / "demo", tmp_path / "policies")
    current = demo.sz_config.read_text()
    old = "\n".join(line for line in current.splitlines() if "twin_names" not in line)
    demo.sz_config.write_text(old + "\n")
    prepare_demo(tmp_path / "demo", tmp_path / "policies")
    assert demo.sz_config.read_text() == current
    # A config that has the setting is kept as the operator left it.
    edited = current.replace("# Only the HK gateway", "# Edited. Only the HK gateway")
    demo.sz_config.write_text(edited)
    prepare_demo(tmp_path / "demo", tmp_path / "policies")
    assert demo.sz_config.read_text() == edited
