"""``gateway demo`` configs: the twins pin each other's certificates, by name and by key."""

from __future__ import annotations

from pathlib import Path

from cryptography.x509.oid import NameOID

from gateway.crypto.certs import ParkPaths, init_dev_pki, load_certificates, spki_pin
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


def _pin(demo_root: Path, park: str, role: str) -> str:
    return spki_pin(load_certificates(ParkPaths(demo_root / "certs" / park).cert(role))[0])


def test_the_demo_twins_pin_each_others_keys(tmp_path: Path) -> None:
    demo = prepare_demo(tmp_path / "demo", tmp_path / "policies")
    sz, hk = demo.settings()
    assert sz.ingress is not None
    assert sz.ingress.twin_spki == (_pin(demo.root, "hk", "client"),)
    assert hk.egress is not None
    assert hk.egress.upstream_tls is not None
    assert hk.egress.upstream_tls.pin_spki == (_pin(demo.root, "sz", "server"),)


def test_demo_configs_follow_reissued_keys_and_older_configs(tmp_path: Path) -> None:
    demo = prepare_demo(tmp_path / "demo", tmp_path / "policies")
    # A demo made before key pinning: no pin lines. Both are remade pinned.
    for config, key in ((demo.hk_config, "pin_spki"), (demo.sz_config, "twin_spki")):
        kept = [line for line in config.read_text().splitlines() if not line.startswith(key)]
        config.write_text("\n".join(kept) + "\n")
    prepare_demo(tmp_path / "demo", tmp_path / "policies")
    sz, hk = demo.settings()
    assert sz.ingress is not None
    assert sz.ingress.twin_spki == (_pin(demo.root, "hk", "client"),)
    assert hk.egress is not None
    assert hk.egress.upstream_tls is not None
    assert hk.egress.upstream_tls.pin_spki
    # `gateway certs init --force` re-issued every key: the configs follow, or
    # the demo twins would refuse each other.
    init_dev_pki(demo.root / "certs", force=True)
    prepare_demo(tmp_path / "demo", tmp_path / "policies")
    sz, hk = demo.settings()
    assert sz.ingress is not None
    assert sz.ingress.twin_spki == (_pin(demo.root, "hk", "client"),)
    assert hk.egress is not None
    assert hk.egress.upstream_tls is not None
    assert hk.egress.upstream_tls.pin_spki == (_pin(demo.root, "sz", "server"),)
