"""Two real parks on loopback: an SZ ingress, an HK egress, and a recording HTTPS destination.

Everything is real: the dev PKI from ``gateway.crypto.certs``, an age identity,
file audit logs, the in-memory ledger (the ledger backends have their own
tests), aiohttp servers on 127.0.0.1 with ephemeral ports, mutual TLS between
them. Only the policy is written here, so these tests do not move when the
shipped policy packs change.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.audit.keys import load_or_create_signing_key
from gateway.audit.note import NoteSigner
from gateway.crypto.certs import ParkPaths, init_dev_pki, load_certificates, spki_pin
from gateway.crypto.keys import X25519Identity, identity_file_text
from gateway.crypto.tls import server_ssl_context
from gateway.server.config import AuditConfig, GatewaySettings, token_digest
from gateway.server.runner import RunningGateway, running

RESEARCH_TOKEN = "tok-research-0123456789"
GHOST_TOKEN = "tok-ghost-0123456789"  # maps to an identity the policy does not know
OFFICER_TOKEN = "tok-officer-0123456789"
#: A named compliance officer, and one whose name is also the sender's identity.
NAMED_OFFICER_TOKEN = "tok-officer-chan-0123456789"
SELF_OFFICER_TOKEN = "tok-officer-self-0123456789"
#: Subject CN of the HK gateway's dev client certificate (gateway.crypto.certs), the pinned twin.
TWIN_NAME = "gateway-hk"

POLICY = """\
name: server-tests
# The tests route personal data hk->sz too, so the ledger counts both directions.
ledger: {{directions: [hk->sz, sz->hk]}}
categories:
  personal: ["pii.*"]
  sensitive: ["sensitive.*"]
  prohibited: ["secret.*", "marking.*"]
senders:
  hk-research:
    team: genomics
    organisation: hku
routes:
  sz-lab:
    direction: hk->sz
    destination: {ingress}/v1/envelopes/sz-lab
    recipient: {recipient}
    legal_basis: gba-standard-contract
  sz-clinical:
    direction: hk->sz
    destination: {ingress}
    recipient: {recipient}
    legal_basis: gba-standard-contract
  sz-https:
    direction: hk->sz
    destination: {ingress}/v1/envelopes/sz-https
    recipient: {recipient}
    legal_basis: gba-standard-contract
  sz-review:
    direction: hk->sz
    destination: {ingress}/v1/envelopes/sz-review
    recipient: {recipient}
    legal_basis: gba-standard-contract
  sz-contract:
    direction: hk->sz
    destination: {ingress}/v1/envelopes/sz-clinical
    recipient: {recipient}
    legal_basis: gba-standard-contract
  sz-tls:
    direction: hk->sz
    destination: {destination}
    encrypt: tls
    legal_basis: gba-standard-contract
rules:
  - id: block.unscannable
    action: block
    reason: The gateway could not see inside part of this file.
    when:
      unscannable: true
  - id: block.prohibited
    action: block
    reason: Credentials and classified markings never cross the boundary.
    when:
      categories:
        any: [prohibited]
  - id: block.genetic
    action: block
    reason: Human genetic resources information needs MOST approval.
    when:
      labels:
        any: ["sensitive.genetic"]
  - id: allow.contract
    action: allow
    reason: Personal data under the GBA Standard Contract (counted in the ledger).
    when:
      route: sz-contract
  - id: block.personal
    action: block
    reason: Personal information needs a standard contract filing.
    when:
      categories:
        any: [personal]
  - id: review.route
    action: review
    reason: Transfers on this route are checked by a compliance officer.
    when:
      route: sz-review
  - id: allow.clean
    action: allow
    reason: No personal or sensitive data found.
default:
  action: block
  reason: Default deny.
"""


@dataclass
class Recorder:
    """A recording HTTPS destination: every complete body it received, by path."""

    received: dict[str, bytes] = field(default_factory=dict)
    partial: list[int] = field(default_factory=list)
    mode: str = "ok"  # ok | reset | error | stall
    url: str = ""
    #: Set to end the handlers of ``stall`` mode (tests set it before teardown).
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self.mode == "stall":  # accept, never read, never answer
            await self.release.wait()
            return web.Response(status=503)
        if self.mode == "error":
            await request.read()
            return web.Response(status=500)
        chunks = []
        got = 0
        try:
            async for chunk in request.content.iter_any():
                chunks.append(chunk)
                got += len(chunk)
                if self.mode == "reset" and got >= 100_000:
                    assert request.transport is not None
                    request.transport.abort()
                    self.partial.append(got)
                    return web.Response(status=500)
        except (ConnectionError, aiohttp.ClientError):
            self.partial.append(got)
            raise
        self.received[request.path] = b"".join(chunks)
        return web.json_response({"ok": True}, status=201)


@dataclass
class Parks:
    """The running HK egress and SZ ingress, and helpers to talk to them."""

    root: Path
    hk: RunningGateway
    sz: RunningGateway
    recorder: Recorder
    inbox: Path
    session: aiohttp.ClientSession
    identity: X25519Identity
    pki: Path

    @property
    def egress(self) -> str:
        assert self.hk.egress_url is not None
        return self.hk.egress_url

    async def put(
        self,
        route: str,
        name: str,
        data: bytes | Any,
        token: str | None = RESEARCH_TOKEN,
        method: str = "PUT",
    ) -> tuple[int, dict[str, Any]]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.session.request(
            method, f"{self.egress}/v1/transfers/{route}/{name}", data=data, headers=headers
        ) as response:
            result = response.status, await response.json(content_type=None)
        await self.settle()
        return result

    async def settle(self) -> None:
        """Wait for delivery records the egress writes after answering."""
        from gateway.server.egress_state import EGRESS

        assert self.hk.egress_app is not None
        pending = list(self.hk.egress_app[EGRESS].background)
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    def inbox_files(self, route: str = "sz-lab") -> dict[str, bytes]:
        folder = self.inbox / route
        if not folder.exists():
            return {}
        return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}

    def partial_files(self) -> list[Path]:
        """Files under a hidden name anywhere below the inboxes' root.

        That is where unfinished deliveries were ever kept: the fallback
        staging directories beside each inbox (``.<route>.staging/``) and
        older versions' ``<route>/.incoming/``; a delivery that is not
        finished has no name at all.
        """
        return [
            p
            for p in self.inbox.rglob("*")
            if p.is_file() and any(part.startswith(".") for part in p.relative_to(self.inbox).parts)
        ]

    def audit_events(self, park: str = "hk") -> list[dict[str, Any]]:
        """Every record of a park's audit log, parsed, in order."""
        import json

        out = []
        for segment in sorted((self.root / park / "audit" / "segments").glob("*.jsonl")):
            for line in segment.read_bytes().splitlines():
                out.append(json.loads(line))
        return out

    def events_of(self, transfer_id: str, park: str = "hk") -> list[str]:
        return [r["event"] for r in self.audit_events(park) if r.get("transfer_id") == transfer_id]


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pki")
    init_dev_pki(root)
    return root


def sz_settings(
    root: Path, pki: Path, identity_file: Path, destination: str, **ingress: Any
) -> GatewaySettings:
    sz, hk = ParkPaths(pki / "sz"), ParkPaths(pki / "hk")
    inbox = root / "inbox"
    return GatewaySettings(
        name="sz",
        ingress={
            "port": 0,
            "tls": {"cert": sz.cert("server"), "key": sz.key("server"), "client_ca": hk.ca_cert},
            "identity": identity_file,
            "twin_names": [TWIN_NAME],
            "twin_spki": [spki_pin(load_certificates(hk.cert("client"))[0])],
            "deliver": {
                "sz-lab": (inbox / "sz-lab").as_uri(),
                "sz-clinical": (inbox / "sz-clinical").as_uri(),
                "sz-review": (inbox / "sz-review").as_uri(),
                "sz-https": destination + "/https",
            },
            "destination_tls": {
                "cert": sz.cert("client"),
                "key": sz.key("client"),
                "ca": sz.ca_cert,
            },
            "spool_dir": root / "sz" / "spool",
            **ingress,
        },
        audit={
            "dir": root / "sz" / "audit",
            "signing_key": root / "sz" / "audit.key",
            "origin": "sz.test/audit",
        },
        ledger_url="memory:",
        secret_file=root / "sz" / "secret",
        witness_dir=root / "sz" / "witness",
    )


def hk_settings(
    root: Path, pki: Path, policy_dir: Path, ledger_url: str = "memory:", **egress: Any
) -> GatewaySettings:
    hk, sz = ParkPaths(pki / "hk"), ParkPaths(pki / "sz")
    return GatewaySettings(
        name="hk",
        egress={
            "port": 0,
            "policy_dir": policy_dir,
            "spool_dir": root / "hk" / "spool",
            "spool_identity": root / "hk" / "spool.agekey",
            "tokens": [
                {"sha256": token_digest(RESEARCH_TOKEN), "identity": "hk-research"},
                {"sha256": token_digest(GHOST_TOKEN), "identity": "ghost"},
            ],
            "officer_tokens": [token_digest(OFFICER_TOKEN)],
            "officers": [
                {"sha256": token_digest(NAMED_OFFICER_TOKEN), "name": "chan.tai-man"},
                {"sha256": token_digest(SELF_OFFICER_TOKEN), "name": "hk-research"},
            ],
            "upstream_tls": {
                "cert": hk.cert("client"),
                "key": hk.key("client"),
                "ca": sz.ca_cert,
                # The SZ ingress's key (the recording destination holds the same one).
                "pin_spki": [spki_pin(load_certificates(sz.cert("server"))[0])],
            },
            "min_free_spool_bytes": 0,
            **egress,
        },
        audit={
            "dir": root / "hk" / "audit",
            "signing_key": root / "hk" / "audit.key",
            "origin": "hk.test/audit",
        },
        ledger_url=ledger_url,
        secret_file=root / "hk" / "secret",
        witness_dir=root / "hk" / "witness",
    )


def replica_settings(
    root: Path, pki: Path, instance: str, ledger_url: str = "memory:", **egress: Any
) -> GatewaySettings:
    """One replica of the HK park: its own instance name, audit log (origin
    ``hk.test/audit/<instance>``, the park's one signing key), witness store
    and spool; held reviews in the park's shared ``held/`` (each replica's
    in its own subdirectory); everything else as :func:`hk_settings`."""
    base = hk_settings(root, pki, root / "policies", ledger_url)
    assert base.egress is not None
    return base.model_copy(
        update={
            "instance": instance,
            "audit": AuditConfig(
                dir=root / instance / "audit",
                signing_key=root / "hk" / "audit.key",
                origin=f"hk.test/audit/{instance}",
            ),
            "witness_dir": root / instance / "witness",
            "egress": base.egress.model_copy(
                update={"spool_dir": root / instance / "spool", "held_dir": root / "held", **egress}
            ),
        }
    )


@contextlib.asynccontextmanager
async def recording_destination(pki: Path) -> AsyncIterator[Recorder]:
    """An HTTPS server requiring a client certificate from either park's CA.

    The SZ ingress delivers to it (``https://`` delivery), and the HK egress
    reaches it directly for ``encrypt: tls`` routes.
    """
    sz, hk = ParkPaths(pki / "sz"), ParkPaths(pki / "hk")
    bundle = pki / "both-cas.pem"
    bundle.write_bytes(sz.ca_cert.read_bytes() + hk.ca_cert.read_bytes())
    recorder = Recorder()
    app = web.Application(client_max_size=1 << 30)
    app.router.add_route("*", "/{tail:.*}", recorder.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    context = server_ssl_context(
        sz.cert("server"), sz.key("server"), client_ca=bundle, require_client_cert=True
    )
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    recorder.url = f"https://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield recorder
    finally:
        await runner.cleanup()


def write_policy(policy_dir: Path, ingress: str, recipient: str, destination: str) -> None:
    policy_dir.mkdir(parents=True, exist_ok=True)
    (policy_dir / "policy.yaml").write_text(
        POLICY.format(ingress=ingress, recipient=recipient, destination=destination + "/tls")
    )


@contextlib.asynccontextmanager
async def start_parks(
    root: Path,
    pki: Path,
    *,
    egress: dict[str, Any] | None = None,
    ingress: dict[str, Any] | None = None,
    witness: bool = False,
    ledger_url: str = "memory:",
) -> AsyncIterator[Parks]:
    egress = dict(egress or {})
    ingress = dict(ingress or {})
    if witness:
        # The SZ ingress co-signs the HK log: it needs HK's checkpoint verifier key.
        (root / "hk").mkdir(parents=True, exist_ok=True)
        key = load_or_create_signing_key(root / "hk" / "audit.key")
        ingress["witness"] = {
            "origin": "hk.test/audit",
            "log_key": str(NoteSigner("hk.test/audit", key).verifier),
        }
    identity = X25519Identity.generate()
    identity_file = root / "sz" / "identity.agekey"
    identity_file.parent.mkdir(parents=True, exist_ok=True)
    identity_file.write_text(identity_file_text(identity))
    async with contextlib.AsyncExitStack() as stack:
        recorder = await stack.enter_async_context(recording_destination(pki))
        sz = await stack.enter_async_context(
            running(
                sz_settings(root, pki, identity_file, recorder.url, **(ingress or {})),
                drain_seconds=2,
            )
        )
        assert sz.ingress_url is not None
        write_policy(root / "policies", sz.ingress_url, identity.recipient.encode(), recorder.url)
        if witness:
            egress["witness_url"] = sz.ingress_url
        hk = await stack.enter_async_context(
            running(
                hk_settings(root, pki, root / "policies", ledger_url, **egress), drain_seconds=2
            )
        )
        session = await stack.enter_async_context(aiohttp.ClientSession())
        yield Parks(root, hk, sz, recorder, root / "inbox", session, identity, pki)


@pytest.fixture
async def parks(tmp_path: Path, pki: Path) -> AsyncIterator[Parks]:
    async with start_parks(tmp_path, pki) as p:
        yield p


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def slow_body(data: bytes, step: int, pause: float) -> AsyncIterator[bytes]:
    for i in range(0, len(data), step):
        yield data[i : i + step]
        await asyncio.sleep(pause)


Maker = Callable[..., Any]


@dataclass
class StandInTwin:
    """A plain-HTTP stand-in for the twin's ingress that can stop reading (a stalled peer).

    ``stall_payloads``: ``PUT /v1/payloads/{id}`` is accepted and never read.
    ``stall_envelopes``: envelope POSTs are accepted and never read either;
    otherwise they are read whole and recorded in :attr:`envelopes`.
    """

    stall_payloads: bool = True
    stall_envelopes: bool = False
    url: str = ""
    envelopes: dict[str, bytes] = field(default_factory=dict)
    payload_puts: int = 0
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.path.startswith("/v1/payloads/"):
            if request.method == "DELETE":
                return web.Response(status=204)
            self.payload_puts += 1
            if self.stall_payloads:
                await self.release.wait()
            await request.read()
            return web.json_response({}, status=201)
        if self.stall_envelopes:
            await self.release.wait()
            return web.Response(status=503)
        self.envelopes[request.path] = await request.read()
        return web.json_response({}, status=201)


@contextlib.asynccontextmanager
async def stand_in_twin(
    parks: Parks, *, stall_payloads: bool = True, stall_envelopes: bool = False
) -> AsyncIterator[StandInTwin]:
    """Run a :class:`StandInTwin` on loopback and point every envelope route of HK at it."""
    from gateway.server.app import reload_policy

    twin = StandInTwin(stall_payloads=stall_payloads, stall_envelopes=stall_envelopes)
    async with serving_twin(twin):
        assert parks.hk.egress_app is not None
        write_policy(
            parks.root / "policies",
            twin.url,
            parks.identity.recipient.encode(),
            parks.recorder.url,
        )
        await reload_policy(parks.hk.egress_app)
        yield twin


@contextlib.asynccontextmanager
async def serving_twin(twin: StandInTwin) -> AsyncIterator[str]:
    """Serve ``twin`` on loopback; its base URL (also set as ``twin.url``)."""
    app = web.Application(client_max_size=1 << 30)
    app.router.add_route("*", "/{tail:.*}", twin.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    twin.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield twin.url
    finally:
        twin.release.set()
        await runner.cleanup()


async def edit_policy(parks: Parks, old: str, new: str) -> str:
    """Replace ``old`` by ``new`` in the running egress's policy, reload it; the new version."""
    from gateway.server.app import reload_policy

    path = parks.root / "policies" / "policy.yaml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    assert parks.hk.egress_app is not None
    result = await reload_policy(parks.hk.egress_app)
    assert result.ok, result.errors
    assert result.changed
    return str(result.version)
