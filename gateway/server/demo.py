"""``make run``: both parks on loopback with the shipped policies (SPEC §2).

The demo runs both directions. Each park is one gateway process's worth of
configuration with both roles: its egress sends to the other park's ingress,
its ingress receives from the other park's egress. Hong Kong -> Shenzhen
(``hk->sz`` routes) goes from the HK egress (:8080) to the SZ ingress
(:9443); Shenzhen -> Hong Kong (``sz->hk``, where the Mainland export rules
apply) from the SZ egress (:9080) to the HK ingress (:8443).

:func:`prepare_demo` creates, under ``var/demo/`` and only when missing, the
dev PKI of both parks (``gateway certs init``), each ingress's age identity
and its public key (which ``policies/90-demo.yaml`` reads), and two
configuration files, ``hk.toml`` and ``sz.toml``, which ``gateway serve
--config`` accepts as they are. The twins pin each other's public keys, as
in production: each ingress the other park's client certificate's
(``ingress.twin_spki``), each egress the other park's server certificate's
(``egress.upstream_tls.pin_spki``); each ingress co-signs the other park's
audit checkpoints (``ingress.witness``). Running it again keeps everything it
made, except a config that lacks something the current demo needs: one from
before key pinning, after ``gateway certs init --force``, or from the demo
that ran one direction only (no ``[ingress]`` in ``hk.toml``, no ``[egress]``
in ``sz.toml``). That one is written anew; the keys, logs, ledgers and
inboxes it names are kept.

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
SZ_EGRESS_PORT = 9080
HK_INGRESS_PORT = 8443
#: The HK demo sender's token and identity (``policies/90-demo.yaml`` declares the sender).
DEMO_TOKEN = "demo-hk-research"  # noqa: S105 - public demo token, shown in the README
DEMO_IDENTITY = "demo-hk-research"
#: The SZ demo sender: the genomics lab on the HGR white list (``policies/10-hgr.yaml``).
SZ_DEMO_TOKEN = "demo-sz-genomics"  # noqa: S105 - public demo token, shown in the README
SZ_DEMO_IDENTITY = "demo-sz-genomics"
#: A second SZ sender, neither white-listed nor GBA-registered (its HGR data is blocked).
SZ_HOSPITAL_TOKEN = "demo-sz-hospital"  # noqa: S105 - public demo token, shown in the README
SZ_HOSPITAL_IDENTITY = "demo-sz-hospital"
#: The demo compliance officer's token (approves or rejects held reviews, in either park).
DEMO_OFFICER_TOKEN = "demo-compliance-officer"  # noqa: S105 - public demo token
#: Routes the SZ ingress delivers into ``var/demo/sz-inbox/<route>/``.
DEMO_ROUTES = ("sz-lab", "sz-clinical", "sz-pdpo")
#: Routes the HK ingress delivers into ``var/demo/hk-inbox/<route>/``.
HK_ROUTES = ("hk-lab", "hk-clinical")
#: Checkpoint origin of the HK demo log (the SZ witness checks it).
HK_ORIGIN = "hksz-gateway.demo/hk-audit"
#: Checkpoint origin of the SZ demo log (the HK witness checks it).
SZ_ORIGIN = "hksz-gateway.demo/sz-audit"


@dataclass(frozen=True, slots=True)
class DemoPark:
    """One park of the demo: its listeners, its senders and what its ingress delivers.

    Attributes:
        name: ``hk`` or ``sz``: the config file's stem, its state directory
            under ``var/demo/`` and its directory in the dev PKI.
        title: how the config's comments name the park.
        egress_port: the research-facing listener (plain HTTP on loopback).
        ingress_port: the mutual-TLS listener the other park's egress posts to.
        origin: the checkpoint origin of the park's audit log.
        senders: ``(token, identity)`` of the park's demo senders.
        routes: the routes its ingress delivers into ``<name>-inbox/<route>/``.
        egress_spool: spool of the egress (held reviews live there).
        ingress_spool: spool of the ingress. Never the egress's: an ingress
            deletes the ``*.age`` files in its spool when it starts.
    """

    name: str
    title: str
    egress_port: int
    ingress_port: int
    origin: str
    senders: tuple[tuple[str, str], ...]
    routes: tuple[str, ...]
    egress_spool: str
    ingress_spool: str

    @property
    def identity_file(self) -> str:
        """The ingress's age identity (opens envelopes), under ``var/demo/``."""
        return f"{self.name}-ingress.agekey"

    @property
    def recipient_file(self) -> str:
        """The ingress's ``age1…`` recipient, which ``policies/90-demo.yaml`` reads."""
        return f"{self.name}-ingress.age.pub"

    @property
    def inbox(self) -> str:
        """Where the ingress delivers, under ``var/demo/``."""
        return f"{self.name}-inbox"


# The spool paths are those of the one-direction demo where that demo had the
# role (HK egress, SZ ingress), so its held reviews survive the upgrade.
HK = DemoPark(
    name="hk",
    title="Hong Kong",
    egress_port=HK_EGRESS_PORT,
    ingress_port=HK_INGRESS_PORT,
    origin=HK_ORIGIN,
    senders=((DEMO_TOKEN, DEMO_IDENTITY),),
    routes=HK_ROUTES,
    egress_spool="hk/spool",
    ingress_spool="hk/ingress-spool",
)
SZ = DemoPark(
    name="sz",
    title="Shenzhen",
    egress_port=SZ_EGRESS_PORT,
    ingress_port=SZ_INGRESS_PORT,
    origin=SZ_ORIGIN,
    senders=((SZ_DEMO_TOKEN, SZ_DEMO_IDENTITY), (SZ_HOSPITAL_TOKEN, SZ_HOSPITAL_IDENTITY)),
    routes=DEMO_ROUTES,
    egress_spool="sz/egress-spool",
    ingress_spool="sz/spool",
)


@dataclass(frozen=True, slots=True)
class Demo:
    """The prepared demo.

    Attributes:
        root: ``var/demo`` (absolute).
        hk_config: the HK park's configuration file (HK egress, HK ingress).
        sz_config: the SZ park's configuration file (SZ egress, SZ ingress).
        sz_inbox: ``var/demo/sz-inbox`` (``hk->sz`` routes arrive there).
        hk_inbox: ``var/demo/hk-inbox`` (``sz->hk`` routes arrive there).
    """

    root: Path
    hk_config: Path
    sz_config: Path
    sz_inbox: Path
    hk_inbox: Path

    def settings(self) -> list[GatewaySettings]:
        """SZ, then HK: the order they start in (they stop in reverse).

        Each park forwards to the other, so neither order lets every transfer
        find its twin listening: ``make run`` prints its commands once both
        listen, and the witness loop of the first retries after its interval.
        """
        return [load_settings(self.sz_config), load_settings(self.hk_config)]


@dataclass(frozen=True, slots=True)
class ParkUrls:
    """Where one running park listens (what :func:`instructions` prints)."""

    egress: str
    ingress: str


def _toml_str(value: str | Path) -> str:
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True, slots=True)
class _TwinKeys:
    """What one park's config pins of the other park's (its twin's) keys."""

    server_pin: str  # the twin ingress's TLS key (egress.upstream_tls.pin_spki)
    client_pin: str  # the twin egress's TLS client key (ingress.twin_spki)
    client_name: str  # the twin's client certificate subject CN (ingress.twin_names)
    log_key: str  # the twin audit log's note verifier key (ingress.witness.log_key)


def _required(park: DemoPark, keys: _TwinKeys) -> list[str]:
    """What a config of ``park`` must hold to run the current demo with its twin.

    A config without one of them is from an older demo (one direction only,
    before twin pinning, fewer senders or routes) or for other certificates
    (``gateway certs init --force``): it would not load, not reach its twin,
    refuse it, or refuse a demo sender, so it is remade.
    """
    return [
        "[egress]",
        "[egress.intercept]",
        "[ingress]",
        "twin_names",
        keys.server_pin,
        keys.client_pin,
        keys.log_key,
        *(token_digest(token) for token, _ in park.senders),
        *(f'{route} = "{park.inbox}/{route}"' for route in park.routes),
    ]


def _park_config(park: DemoPark, twin: DemoPark, policy_dir: Path, keys: _TwinKeys) -> str:
    tokens = ",\n".join(
        f'  {{ sha256 = "{token_digest(token)}", identity = "{identity}" }}'
        for token, identity in park.senders
    )
    shown = ", ".join(token for token, _ in park.senders)
    deliver = "\n".join(f'{route} = "{park.inbox}/{route}"' for route in park.routes)
    return f"""\
# {park.title} park of the demo (`make run`): its egress sends to the
# {twin.title} park's ingress, its ingress receives from the {twin.title} park's
# egress. Paths are relative to this file.
name = "{park.name}"
ledger_url = "{park.name}/ledger.sqlite3"
secret_file = "{park.name}/secret"
witness_dir = "{park.name}/witness"

[egress]
host = "127.0.0.1"
port = {park.egress_port}
policy_dir = {_toml_str(policy_dir)}
spool_dir = "{park.egress_spool}"
spool_identity = "{park.name}/spool.agekey"
# Only SHA-256 digests of tokens are stored. Demo sender tokens: {shown}
tokens = [
{tokens},
]
# Demo compliance officer token: {DEMO_OFFICER_TOKEN}
officer_tokens = ["{token_digest(DEMO_OFFICER_TOKEN)}"]
# The {twin.name.upper()} twin co-signs this park's audit checkpoints.
witness_url = "https://127.0.0.1:{twin.ingress_port}"

[egress.upstream_tls]
cert = "certs/{park.name}/client.crt"
key = "certs/{park.name}/client.key"
ca = "certs/{twin.name}/ca.crt"
# The {twin.name.upper()} ingress's public key (`gateway certs show certs/{twin.name}/server.crt`):
# a certificate from the {twin.name.upper()} CA for another key is refused before a byte is sent.
pin_spki = ["{keys.server_pin}"]

# CONNECT tunnels: HTTPS_PROXY clients push as to the twin itself, trusting this
# interception CA (`gateway certs trust-help --ca certs/{park.name}/intercept-ca.pem`).
[egress.intercept]
cert = "certs/{park.name}/intercept-ca.pem"
key = "certs/{park.name}/intercept-ca.key"

[ingress]
host = "127.0.0.1"
port = {park.ingress_port}
identity = "{park.identity_file}"
spool_dir = "{park.ingress_spool}"
# Only the {twin.name.upper()} gateway's client certificate (subject CN) may post
# envelopes: the {twin.name.upper()} CA may issue other client certificates too. Its public
# key is pinned as well (`gateway certs show certs/{twin.name}/client.crt`), so a
# certificate the {twin.name.upper()} CA issued under that name for another key is refused.
twin_names = [{_toml_str(keys.client_name)}]
twin_spki = ["{keys.client_pin}"]

[ingress.tls]
cert = "certs/{park.name}/server.crt"
key = "certs/{park.name}/server.key"
client_ca = "certs/{twin.name}/ca.crt"
require_client_cert = true

# route -> local destination: a directory (relative to this file), file:///dir or https://
[ingress.deliver]
{deliver}

# Co-sign the {twin.name.upper()} egress's audit checkpoints (its log's verifier key).
[ingress.witness]
origin = "{twin.origin}"
log_key = "{keys.log_key}"

[audit]
dir = "{park.name}/audit"
signing_key = "certs/{park.name}/audit-ed25519.key"
origin = "{park.origin}"
"""


def _common_name(cert_path: Path) -> str:
    """The subject CN of a certificate file (the twin name the ingress pins)."""
    cert = load_certificates(cert_path)[0]
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(names) != 1:
        raise ConfigError(f"{cert_path}: expected exactly one subject CN")
    return str(names[0].value)


def _twin_keys(root: Path, twin: DemoPark) -> _TwinKeys:
    paths = ParkPaths(root / "certs" / twin.name)
    verifier = NoteSigner(twin.origin, load_or_create_signing_key(paths.audit_key)).verifier
    return _TwinKeys(
        server_pin=spki_pin(load_certificates(paths.cert("server"))[0]),
        client_pin=spki_pin(load_certificates(paths.cert("client"))[0]),
        client_name=_common_name(paths.cert("client")),
        log_key=str(verifier),
    )


def _ensure_ingress_identity(root: Path, park: DemoPark) -> None:
    """The ingress's age identity (kept once made) and its recipient file, kept current."""
    identity_path = root / park.identity_file
    if not identity_path.exists():
        identity = X25519Identity.generate()
        write_private_file(identity_path, identity_file_text(identity).encode())
    identity = load_identities(identity_path)[0]
    recipient_path = root / park.recipient_file
    recipient_line = identity.recipient.encode() + "\n"
    if not recipient_path.exists() or recipient_path.read_text() != recipient_line:
        recipient_path.write_text(recipient_line)


def _ensure_config(root: Path, park: DemoPark, twin: DemoPark, policy_dir: Path) -> Path:
    """Write ``<park>.toml`` when missing or stale (see :func:`_required`)."""
    keys = _twin_keys(root, twin)
    config = root / f"{park.name}.toml"
    text = config.read_text() if config.exists() else ""
    if any(line not in text for line in _required(park, keys)):
        config.write_text(_park_config(park, twin, policy_dir, keys))
    return config


def prepare_demo(root: Path = DEMO_DIR, policy_dir: Path = Path("policies")) -> Demo:
    """Create whatever the demo still lacks under ``root``; keep what exists."""
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    init_dev_pki(root / "certs")
    for park in (HK, SZ):
        _ensure_ingress_identity(root, park)
        for route in park.routes:
            (root / park.inbox / route).mkdir(parents=True, exist_ok=True)
    hk_config = _ensure_config(root, HK, SZ, policy_dir.resolve())
    sz_config = _ensure_config(root, SZ, HK, policy_dir.resolve())
    return Demo(root, hk_config, sz_config, root / SZ.inbox, root / HK.inbox)


def instructions(demo: Demo, hk: ParkUrls, sz: ParkUrls, samples: Path) -> str:
    """What ``make run`` prints once both parks listen: the exact commands to try."""
    auth = f"-H 'Authorization: Bearer {DEMO_TOKEN}'"
    base = f"{hk.egress}/v1/transfers"
    sz_auth = f"-H 'Authorization: Bearer {SZ_DEMO_TOKEN}'"
    hospital = f"-H 'Authorization: Bearer {SZ_HOSPITAL_TOKEN}'"
    sz_base = f"{sz.egress}/v1/transfers"
    hk_officer = f"--url {hk.egress} --token {DEMO_OFFICER_TOKEN}"
    sz_officer = f"--url {sz.egress} --token {DEMO_OFFICER_TOKEN}"
    return f"""\
hksz-gateway demo, both directions (mutual TLS between the parks):
  Hong Kong -> Shenzhen: HK egress {hk.egress}  ->  SZ ingress {sz.ingress}
      inbox {demo.sz_inbox}/<route>/
  Shenzhen -> Hong Kong: SZ egress {sz.egress}  ->  HK ingress {hk.ingress}
      inbox {demo.hk_inbox}/<route>/
  configs: {demo.hk_config}, {demo.sz_config}

From Hong Kong (PDPO), push the samples (one allow, two blocks with their reasons):
  curl {auth} -T {samples}/clean.csv {base}/sz-lab/clean.csv
  curl {auth} -T {samples}/personal.csv {base}/sz-lab/personal.csv
  curl {auth} -T {samples}/genetic.fasta {base}/sz-lab/genetic.fasta

Or with HTTPS_PROXY, as to the Shenzhen ingress itself (curl, requests, httpx, rclone
unchanged; the proxy password is the sender token; trust the demo's interception CA):
  HTTPS_PROXY=http://{DEMO_IDENTITY}:{DEMO_TOKEN}@{hk.egress.removeprefix("http://")} \\
    curl --cacert {demo.root}/certs/hk/intercept-ca.pem -T {samples}/clean.csv \\
    {sz.ingress}/v1/envelopes/sz-lab/clean-via-proxy.csv
  gateway certs trust-help   (the system store, requests/httpx, curl)

Then:
  ls {demo.sz_inbox}/sz-lab/
  curl {auth} {base}/<transfer_id>
  curl {hk.egress}/metrics   (Prometheus)   curl {hk.egress}/readyz

A review (identity card numbers under the PCPD model clauses are held):
  curl {auth} -T {samples}/personal.csv {base}/sz-pdpo/personal.csv
  gateway review list {hk_officer}
  gateway review approve <transfer_id> --comment "consent on file" {hk_officer}
  ls {demo.sz_inbox}/sz-pdpo/

From Shenzhen (Mainland export rules: PIPL, the 2024 Provisions, HGR, GBA Standard Contract):
  curl {sz_auth} -T {samples}/clean.csv {sz_base}/hk-lab/clean.csv
  curl {sz_auth} -T {samples}/personal.csv {sz_base}/hk-lab/personal.csv
  curl {sz_auth} -T {samples}/personal.csv {sz_base}/hk-clinical/personal.csv
  curl {hospital} -T {samples}/human-genome.fasta {sz_base}/hk-lab/human-genome.fasta
  ls {demo.hk_inbox}/hk-lab/ {demo.hk_inbox}/hk-clinical/
(allowed: no personal information; blocked: sensitive personal information
needs a contract; allowed: GBA Standard Contract; blocked: human genetic
resources from an organisation not on the HGR white list)

An HGR review (human genome data of the white-listed genomics lab to the Hong Kong Park is held):
  curl {sz_auth} -T {samples}/human-genome.fasta {sz_base}/hk-lab/human-genome.fasta
  gateway review list {sz_officer}
  gateway review approve <transfer_id> --comment "HGR filing and backup copy on record" {sz_officer}
  ls {demo.hk_inbox}/hk-lab/

Ctrl-C stops both parks cleanly.
"""
