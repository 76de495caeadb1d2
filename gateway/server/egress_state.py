"""What the egress role's handlers share, under one app key (:data:`EGRESS`).

The wiring (config, services, policy, tokens, spool, identities, the HTTP
client) is set once by :func:`gateway.server.app.make_egress_app`; the rest is
the role's bookkeeping: transfers in flight, recent and held transfers, the
background jobs that outlive a request, and the directory writes still owed to
the park's other replicas.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from gateway.audit.log import AuditLog
from gateway.classify.budget import DecoderBudget
from gateway.classify.summary import ScanSummary
from gateway.crypto.keys import X25519Identity, X25519Recipient
from gateway.errors import Unavailable
from gateway.ledger.base import LocalOnly, TransferEntry
from gateway.policy.engine import CompiledPolicy, Route
from gateway.server.auth import TokenTable
from gateway.server.config import EgressConfig
from gateway.server.job import Job
from gateway.server.services import Services
from gateway.server.spool import SpoolDir, SpoolInfo
from gateway.server.transfer import Transfer

log = structlog.get_logger("gateway.egress")

#: Parsed route recipients kept per process: a policy names a handful, so
#: reaching this means many reloads with new keys, and the cache starts over.
RECIPIENT_CACHE = 256
#: Finished transfers remembered for ``GET /v1/transfers/{id}``; older ones are
#: answered from the audit log. 10,000 small dicts are a few MB.
RECENT_TRANSFERS = 10_000


@dataclass(slots=True)
class Held:
    """A transfer waiting for a compliance officer: its job, and the verdict that held it.

    ``job.summary`` is None after a restart (only its JSON survives in the
    held metadata); ``job.info.file_key`` is then empty until approval unwraps it.
    """

    job: Job
    #: The verdict that held it (rule, reason, policy version, approvals needed).
    decision: dict[str, Any]
    #: Its people per ledger category as the policy of its day counted them.
    digests: Mapping[str, frozenset[bytes]]
    #: Approvals recorded so far when the rule asks for more than one
    #: (officer, comment, reference); restored from the audit records after a restart.
    approvals: list[tuple[str, str, str | None]] = field(default_factory=list)

    @property
    def transfer(self) -> Transfer:
        """The held transfer."""
        return self.job.transfer

    @property
    def summary(self) -> ScanSummary | None:
        """What the classifier found (None when restored after a restart)."""
        return self.job.summary

    @property
    def info(self) -> SpoolInfo:
        """The held spool."""
        return self.job.info

    @property
    def direction(self) -> str:
        """The direction of the route it was held on."""
        return self.job.direction

    def verdict(self) -> tuple[str, str, str]:
        """Rule, reason and policy version of the ``review`` verdict that held it."""
        meta = self.decision
        return (
            str(meta.get("rule", "")),
            str(meta.get("reason", "")),
            str(meta.get("policy_version", "")),
        )

    @property
    def approvals_needed(self) -> int:
        """How many distinct officers must approve it (the holding rule's ``approvals``)."""
        needed = self.decision.get("approvals", 1)
        return needed if isinstance(needed, int) and needed > 0 else 1


@dataclass(slots=True)
class EgressState:
    """Everything the egress handlers share, kept under :data:`EGRESS`.

    Attributes:
        config: the egress section of the settings.
        services: audit log, ledger, metrics, secret.
        policy: callable returning the policy in force (None until one loaded).
        tokens: bearer-token table.
        spool: the encrypted spool directory.
        spool_identity: the gateway's own age identity for held reviews.
        decoder_budget: the decoder memory every transfer's classifier
            reserves its decompression windows from (503 when it is held).
        session: HTTP client for the twin and destinations.
        upstream_ssl: TLS client context for the twin and destinations
            (built once: loading certificates per transfer would cost a millisecond).
        inflight: transfers in progress.
        recent: recently seen transfers by id.
        held: transfers waiting for review by id.
        tasks: in-flight transfer tasks (for draining at shutdown).
        background: payload discards at the twin still running after the answer.
        closing: shutting down; new transfers get 503.
        cut: the drain deadline passed; transfers still running are being
            cancelled, and answer 503 with their transfer id.
        recipients: route recipients by their ``age1…`` string, parsed once
            (a Bech32 decode and checksum cost ~40 µs, twice per transfer).
    """

    config: EgressConfig
    services: Services
    policy: Callable[[], CompiledPolicy | None]
    tokens: TokenTable
    spool: SpoolDir
    spool_identity: X25519Identity
    decoder_budget: DecoderBudget
    session: aiohttp.ClientSession | None = None
    upstream_ssl: ssl.SSLContext | None = None
    inflight: int = 0
    recent: OrderedDict[str, Transfer] = field(default_factory=OrderedDict)
    held: dict[str, Held] = field(default_factory=dict)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    background: set[asyncio.Future[Any]] = field(default_factory=set)
    closing: bool = False
    cut: bool = False
    recipients: dict[str, X25519Recipient] = field(default_factory=dict)
    #: Directory writes of each transfer not yet awaited by its request (issue 16).
    publishing: dict[str, list[asyncio.Future[Any]]] = field(default_factory=dict)
    #: Reviews a decision is being recorded on here, also those held by another
    #: replica (:func:`gateway.server.reviews.handle_review`).
    deciding: set[str] = field(default_factory=set)
    #: Directory writes that failed, the newest per transfer, retried by
    #: :func:`~gateway.server.records.republish_periodically` (at most
    #: :data:`~gateway.server.records.MAX_UNPUBLISHED`).
    unpublished: OrderedDict[str, tuple[TransferEntry, int]] = field(default_factory=OrderedDict)

    def track(self, future: asyncio.Future[Any]) -> None:
        """Keep a background job (a payload discard at the twin) alive until done; log failures."""
        self.background.add(future)

        def done(f: asyncio.Future[Any]) -> None:
            self.background.discard(f)
            if not f.cancelled() and f.exception() is not None:
                log.error("background_task_failed", error_type=type(f.exception()).__name__)

        future.add_done_callback(done)

    @property
    def instance(self) -> str:
        """This replica's instance name: whose audit log holds its transfers' records."""
        return self.services.settings.instance

    @property
    def park_wide(self) -> bool:
        """Whether the park's replicas share transfers and reviews (a PostgreSQL directory)."""
        return not isinstance(self.services.directory, LocalOnly)

    @property
    def audit(self) -> AuditLog:
        """The audit log."""
        return self.services.audit

    def current_policy(self) -> CompiledPolicy:
        """The policy in force.

        Raises:
            Unavailable: no policy has loaded (fail closed).
        """
        policy: CompiledPolicy | None = self.policy()
        if policy is None:
            self.services.metrics.fail_closed.labels("policy").inc()
            raise Unavailable("no valid policy is loaded; nothing can be decided")
        return policy

    def release_spool(self, transfer_id: str, info: SpoolInfo | None = None) -> None:
        """Delete a transfer's spool files in a worker thread, tracked until done.

        unlink(2) frees a file's extents in the calling thread: 27 ms measured
        for 128 MB on this ext4 (mounted with ``discard``), far more for
        gigabytes; on the event loop that would stall every other transfer.
        A spool kept in memory (``info.payload``) left nothing on disk.
        """
        if info is not None and info.payload is not None:
            return
        # A held review taken over from another replica is in that replica's directory.
        held_in = info.path.parent if info is not None else None
        self.track(
            asyncio.ensure_future(asyncio.to_thread(self.spool.release, transfer_id, held_in))
        )

    def recipient(self, route: Route) -> X25519Recipient:
        """The age recipient an envelope on ``route`` is encrypted to.

        Raises:
            Unavailable: the route names no recipient.
            KeyFormatError: the recipient is not a valid ``age1…`` key.
        """
        text = route.recipient
        if not text:
            raise Unavailable(f"route {route.name!r} has no recipient key for envelope mode")
        found = self.recipients.get(text)
        if found is None:
            if len(self.recipients) >= RECIPIENT_CACHE:
                self.recipients.clear()
            found = self.recipients[text] = X25519Recipient.parse(text)
        return found

    def remember(self, transfer: Transfer) -> None:
        """Keep ``transfer`` for the status API, evicting the oldest past the bound."""
        self.recent[transfer.id] = transfer
        self.recent.move_to_end(transfer.id)
        while len(self.recent) > RECENT_TRANSFERS:
            oldest, _ = self.recent.popitem(last=False)
            if oldest in self.held:  # a held review is never forgotten
                self.recent[oldest] = self.held[oldest].transfer


EGRESS = web.AppKey("egress", EgressState)
