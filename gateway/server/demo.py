"""``make run``: both parks on loopback with the shipped policies (SPEC §2).

:func:`prepare_demo` creates, under ``var/demo/`` and only when missing, the
dev PKI of both parks (``gateway certs init``), the Shenzhen ingress's age
identity and its public key (which ``policies/90-demo.yaml`` reads), and two
configuration files, ``hk.toml`` and ``sz.toml``, which ``gateway serve
--config`` accepts as they are. The twins pin each other's public keys, as
in production: the SZ ingress the HK client certificate's
(``ingress.twin_spki``), the HK egress the SZ server certificate's
(``egress.upstream_tls.pin_spki``). Running it again keeps everything it
made, except a config that does not pin the current certificates' keys (one
from before key pinning, or after ``gateway certs init --force``): that one
is written anew.

The demo tokens are fixed and public (they are in the README): they identify
the demo senders, and only their SHA-256 is in the configuration.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.x509.oid import NameOID

from gateway.audit.keys import load_or_create_signing_key
from gateway.audit.note import NoteSigner
from gateway.crypto.certs import ParkPaths, init_dev_pki, load_certificates, spki_pin
from gateway.crypto.keys import (
    X25519Identity,
    identity_file_text,
    load_identities,
    write_private_file,
)
from gateway.errors import ConfigError
from gateway.server.config import GatewaySettings, load_settings, token_digest

#: Where ``make run`` keeps its keys, configs, logs and inboxes (git-ignored ``var/``).
DEMO_DIR = Path("var/demo")
#: The demo listeners (issue 4: fixed, so the README's commands work as written).
HK_EGRESS_PORT = 8080
SZ_INGRESS_PORT = 9443
#: The demo sender's token and identity (``policies/90-demo.yaml`` declares the sender).
DEMO_TOKEN = "demo-hk-research"  # noqa: S105 - public demo token, shown in the README
DEMO_IDENTITY = "demo-hk-research"
#: The demo compliance officer's token (approves or rejects held reviews).
DEMO_OFFICER_TOKEN = "demo-compliance-officer"  # noqa: S105 - public demo token
#: Routes the SZ ingress delivers into ``var/demo/sz-inbox/<route>/``.
DEMO_ROUTES = ("sz-lab", "sz-clinical", "sz-pdpo")
#: Checkpoint origin of the HK demo log (the SZ witness checks it).
HK_ORIGIN = "hksz-gateway.demo/hk-audit"
#: The file ``policies/90-demo.yaml`` reads the SZ recipient from.
RECIPIENT_FILE = "sz-ingress.age.pub"
#: The ingress setting that pins the twin; an ``sz.toml`` without it is remade.
_TWIN_KEY = "twin_names"


@dataclass(frozen=True, slots=True)
class Demo:
    """The prepared demo.

    Attributes:
        root: ``var/demo`` (absolute).
        hk_config: the HK egress configuration file.
        sz_config: the SZ ingress configuration file.
        inbox: ``var/demo/sz-inbox``.
    """

    root: Path
    hk_config: Path
    sz_config: Path
    inbox: Path

    def settings(self) -> list[GatewaySettings]:
        """SZ first, so it starts first and stops last (HK forwards to it)."""
        return [load_settings(self.sz_config), load_settings(self.hk_config)]


def _toml_str(value: str | Path) -> str:
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _hk_config(policy_dir: Path, sz_server_pin: str) -> str:
    return f"""\
# HK park egress of the demo (`make run`). Paths are relative to this file.
name = "hk"
ledger_url = "hk/ledger.sqlite3"
secret_file = "hk/secret"
witness_dir = "hk/witness"

[egress]
host = "127.0.0.1"
port = {HK_EGRESS_PORT}
policy_dir = {_toml_str(policy_dir)}
spool_dir = "hk/spool"
spool_identity = "hk/spool.agekey"
# Only SHA-256 digests of tokens are stored. Demo sender token: {DEMO_TOKEN}
tokens = [{{ sha256 = "{token_digest(DEMO_TOKEN)}", identity = "{DEMO_IDENTITY}" }}]
# Demo compliance officer token: {DEMO_OFFICER_TOKEN}
officer_tokens = ["{token_digest(DEMO_OFFICER_TOKEN)}"]
# The SZ twin co-signs this park's audit checkpoints.
witness_url = "https://127.0.0.1:{SZ_INGRESS_PORT}"

[egress.upstream_tls]
cert = "certs/hk/client.crt"
key = "certs/hk/client.key"
ca = "certs/sz/ca.crt"
# The SZ ingress's public key (`gateway certs show certs/sz/server.crt`): a
# certificate from the SZ CA for another key is refused before a byte is sent.
pin_spki = ["{sz_server_pin}"]

[audit]
dir = "hk/audit"
signing_key = "certs/hk/audit-ed25519.key"
origin = "{HK_ORIGIN}"
"""


def _sz_config(hk_log_key: str, twin_name: str, twin_pin: str) -> str:
    deliver = "\n".join(f'{route} = "sz-inbox/{route}"' for route in DEMO_ROUTES)
    return f"""\
# SZ park ingress of the demo (`make run`). Paths are relative to this file.
name = "sz"
ledger_url = "sz/ledger.sqlite3"
secret_file = "sz/secret"
witness_dir = "sz/witness"

[ingress]
host = "127.0.0.1"
port = {SZ_INGRESS_PORT}
identity = "sz-ingress.agekey"
spool_dir = "sz/spool"
# Only the HK gateway's client certificate (subject CN) may post envelopes:
# the HK CA may issue other client certificates too. Its public key is pinned
# as well (`gateway certs show certs/hk/client.crt`), so a certificate the HK
# CA issued under that name for another key is refused.
twin_names = [{_toml_str(twin_name)}]
twin_spki = ["{twin_pin}"]

[ingress.tls]
cert = "certs/sz/server.crt"
key = "certs/sz/server.key"
client_ca = "certs/hk/ca.crt"
require_client_cert = true

# route -> local destination: a directory (relative to this file), file:///dir or https://
[ingress.deliver]
{deliver}

# Co-sign the HK egress's audit checkpoints (its log's verifier key).
[ingress.witness]
origin = "{HK_ORIGIN}"
log_key = "{hk_log_key}"

[audit]
dir = "sz/audit"
signing_key = "certs/sz/audit-ed25519.key"
origin = "hksz-gateway.demo/sz-audit"
"""


def _common_name(cert_path: Path) -> str:
    """The subject CN of a certificate file (the twin name the ingress pins)."""
    cert = load_certificates(cert_path)[0]
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1:
        raise ConfigError(f"{cert_path}: expected exactly one subject CN")
    return str(names[0].value)


def prepare_demo(root: Path = DEMO_DIR, policy_dir: Path = Path("policies")) -> Demo:
    """Create whatever the demo still lacks under ``root``; keep what exists."""
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    init_dev_pki(root / "certs")
    identity_path = root / "sz-ingress.agekey"
    if not identity_path.exists():
        identity = X25519Identity.generate()
        write_private_file(identity_path, identity_file_text(identity).encode())
    identity = load_identities(identity_path)[0]
    recipient_path = root / RECIPIENT_FILE
    recipient_line = identity.recipient.encode() + "\n"
    if not recipient_path.exists() or recipient_path.read_text() != recipient_line:
        recipient_path.write_text(recipient_line)
    inbox = root / "sz-inbox"
    for route in DEMO_ROUTES:
        (inbox / route).mkdir(parents=True, exist_ok=True)
    hk, sz = ParkPaths(root / "certs" / "hk"), ParkPaths(root / "certs" / "sz")
    sz_server_pin = spki_pin(load_certificates(sz.cert("server"))[0])
    hk_client_pin = spki_pin(load_certificates(hk.cert("client"))[0])
    hk_config = root / "hk.toml"
    # Without the SZ key's pin (a config from before key pinning, or certificates
    # re-issued since) the egress would not be pinned or not reach its twin: remake it.
    if not hk_config.exists() or sz_server_pin not in hk_config.read_text():
        hk_config.write_text(_hk_config(policy_dir.resolve(), sz_server_pin))
    sz_config = root / "sz.toml"
    # A config from before twin pinning (no ``twin_names``) or without the HK
    # client key's pin would not load or would refuse the HK egress: remake it.
    sz_text = sz_config.read_text() if sz_config.exists() else ""
    stale = any(f'{route} = "sz-inbox/{route}"' not in sz_text for route in DEMO_ROUTES)
    if _TWIN_KEY not in sz_text or hk_client_pin not in sz_text or stale:
        hk_key = load_or_create_signing_key(hk.audit_key)
        verifier = str(NoteSigner(HK_ORIGIN, hk_key).verifier)
        sz_config.write_text(_sz_config(verifier, _common_name(hk.cert("client")), hk_client_pin))
    return Demo(root, hk_config, sz_config, inbox)


def instructions(demo: Demo, egress_url: str, ingress_url: str, samples: Path) -> str:
    """What ``make run`` prints once both parks listen: the exact commands to try."""
    auth = f"-H 'Authorization: Bearer {DEMO_TOKEN}'"
    base = f"{egress_url}/v1/transfers"
    return f"""\
hksz-gateway demo: HK egress {egress_url}  ->  SZ ingress {ingress_url}
  inbox:   {demo.inbox}/<route>/
  configs: {demo.hk_config}, {demo.sz_config}

Push the samples (one allow, two blocks with their reasons):
  curl {auth} -T {samples}/clean.csv {base}/sz-lab/clean.csv
  curl {auth} -T {samples}/personal.csv {base}/sz-lab/personal.csv
  curl {auth} -T {samples}/genetic.fasta {base}/sz-lab/genetic.fasta

Then:
  ls {demo.inbox}/sz-lab/
  curl {auth} {base}/<transfer_id>
  curl {egress_url}/metrics   (Prometheus)   curl {egress_url}/readyz

A review (identity card numbers under the PCPD model clauses are held):
  curl {auth} -T {samples}/personal.csv {base}/sz-pdpo/personal.csv
  gateway review list --token {DEMO_OFFICER_TOKEN}
  gateway review approve <transfer_id> --comment "consent on file" --token {DEMO_OFFICER_TOKEN}
  ls {demo.inbox}/sz-pdpo/

Ctrl-C stops both parks cleanly.
"""
