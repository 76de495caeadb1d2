"""``gateway demo`` configs: both directions; the twins pin each other's certificates, by
name and by key, and witness each other's logs; older configs are remade, keys kept."""

from __future__ import annotations

from pathlib import Path

from cryptography.x509.oid import NameOID

from gateway.audit.keys import load_signing_key
from gateway.audit.note import NoteSigner
from gateway.crypto.certs import ParkPaths, init_dev_pki, load_certificates, spki_pin
from gateway.crypto.keys import load_identities
from gateway.server.config import load_settings, token_digest
from gateway.server.demo import (
    HK_EGRESS_PORT,
    HK_INGRESS_PORT,
    HK_ORIGIN,
    SZ_EGRESS_PORT,
    SZ_HOSPITAL_TOKEN,
    SZ_INGRESS_PORT,
    SZ_ORIGIN,
    prepare_demo,
)


def _cn(demo_root: Path, park: str) -> str:
    """The subject CN of ``park``'s client certificate (the name its twin admits)."""
    cert = load_certificates(ParkPaths(demo_root / "certs" / park).cert("client"))[0]
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def test_the_demo_ingress_pins_the_hk_client_certificate(tmp_path: Path) -> None:
    demo = prepare_demo(tmp_path / "demo", tmp_path / "policies")
    settings = load_settings(demo.sz_config)
    assert settings.ingress is not None
    assert settings.ingress.twin_names == (_cn(demo.root, "hk"),)


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
    for park, twin, settings in (("sz", "hk", sz), ("hk", "sz", hk)):
        assert settings.ingress is not None
        assert settings.ingress.twin_names == (_cn(demo.root, twin),)
        assert settings.ingress.twin_spki == (_pin(demo.root, twin, "client"),)
        assert settings.ingress.tls.client_ca == demo.root / "certs" / twin / "ca.crt"
        assert settings.egress is not None
        assert settings.egress.upstream_tls is not None
        assert settings.egress.upstream_tls.pin_spki == (_pin(demo.root, twin, "server"),)
        assert settings.egress.upstream_tls.cert == demo.root / "certs" / park / "client.crt"
        assert settings.egress.upstream_tls.ca == demo.root / "certs" / twin / "ca.crt"


def test_the_demo_runs_both_directions_and_each_park_witnesses_the_other(tmp_path: Path) -> None:
    demo = prepare_demo(tmp_path / "demo", tmp_path / "policies")
    sz, hk = demo.settings()
    assert (sz.name, hk.name) == ("sz", "hk")
    assert sz.egress is not None
    assert sz.ingress is not None
    assert hk.egress is not None
    assert hk.ingress is not None
    assert (hk.egress.port, sz.ingress.port) == (HK_EGRESS_PORT, SZ_INGRESS_PORT)
    assert (sz.egress.port, hk.ingress.port) == (SZ_EGRESS_PORT, HK_INGRESS_PORT)
    assert hk.egress.witness_url == f"https://127.0.0.1:{SZ_INGRESS_PORT}"
    assert sz.egress.witness_url == f"https://127.0.0.1:{HK_INGRESS_PORT}"
    assert (hk.audit.origin, sz.audit.origin) == (HK_ORIGIN, SZ_ORIGIN)
    for settings, twin in ((sz, hk), (hk, sz)):
        assert settings.ingress is not None
        witness = settings.ingress.witness
        assert witness is not None
        assert witness.origin == twin.audit.origin
        log_key = NoteSigner(twin.audit.origin, load_signing_key(twin.audit.signing_key)).verifier
        assert witness.log_key == str(log_key)
    # An ingress deletes the ciphertext in its spool when it starts: never the egress's.
    for settings in (sz, hk):
        assert settings.ingress is not None
        assert settings.egress is not None
        assert settings.ingress.spool_dir != settings.egress.spool_dir
    # Each ingress has its own age identity, and 90-demo.yaml reads its recipient.
    for park in ("hk", "sz"):
        identity = load_identities(demo.root / f"{park}-ingress.agekey")[0]
        recipient = (demo.root / f"{park}-ingress.age.pub").read_text().strip()
        assert recipient == identity.recipient.encode()
    assert hk.ingress.identity != sz.ingress.identity
    assert set(hk.ingress.deliver) == {"hk-lab", "hk-clinical"}
    assert set(sz.ingress.deliver) == {"sz-lab", "sz-clinical", "sz-pdpo"}
    for route in (*hk.ingress.deliver, *sz.ingress.deliver):
        inbox = demo.hk_inbox if route.startswith("hk-") else demo.sz_inbox
        assert (inbox / route).is_dir()


def _cut(text: str, start: str, end: str) -> str:
    """``text`` without the lines from ``start`` up to (not including) ``end``."""
    head, rest = text.split(start, 1)
    return head + end + rest.split(end, 1)[1]


def test_configs_of_the_one_direction_demo_are_remade_keeping_the_keys(tmp_path: Path) -> None:
    demo = prepare_demo(tmp_path / "demo", tmp_path / "policies")
    hk_text, sz_text = demo.hk_config.read_text(), demo.sz_config.read_text()
    kept = sorted(demo.root.glob("*.agekey")) + sorted((demo.root / "certs").rglob("*.key"))
    keys = {path: path.read_bytes() for path in kept}
    # What the demo wrote when it ran Hong Kong -> Shenzhen only: an HK egress
    # without an ingress, an SZ ingress without an egress.
    demo.hk_config.write_text(_cut(hk_text, "[ingress]\n", "[audit]\n"))
    demo.sz_config.write_text(_cut(sz_text, "[egress]\n", "[ingress]\n"))
    sz, hk = (load_settings(path) for path in (demo.sz_config, demo.hk_config))
    assert hk.ingress is None
    assert sz.egress is None
    again = prepare_demo(tmp_path / "demo", tmp_path / "policies")
    assert again == demo
    assert (demo.hk_config.read_text(), demo.sz_config.read_text()) == (hk_text, sz_text)
    assert {path: path.read_bytes() for path in kept} == keys
    # A demo sender added since (its token's digest is missing): remade too.
    hospital = token_digest(SZ_HOSPITAL_TOKEN)
    lines = [line for line in sz_text.splitlines() if hospital not in line]
    demo.sz_config.write_text("\n".join(lines) + "\n")
    assert load_settings(demo.sz_config).egress is not None
    prepare_demo(tmp_path / "demo", tmp_path / "policies")
    assert demo.sz_config.read_text() == sz_text


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
