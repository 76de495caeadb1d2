"""One transfer's context as it moves through the egress pipeline, in one object.

A :class:`Job` is made once the body is received and classified, and carries
what every later step needs (the transfer, its route and sender, its summary
and spool, the verdict it goes out under, the pipelined upload) from the
decision to delivery: those steps take a job, not a dozen arguments. A held
review becomes a job again when an officer approves it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from gateway.audit.records import Decision as DecisionName
from gateway.classify.summary import ScanSummary
from gateway.policy.engine import Route, TransferContext
from gateway.policy.model import Direction, EncryptMode
from gateway.server.forward import PayloadUpload
from gateway.server.spool import SpoolInfo
from gateway.server.transfer import Transfer


@dataclass(frozen=True, slots=True)
class Release:
    """The verdict a transfer is delivered under, as its records name it.

    Attributes:
        decision: the recorded decision (``allow``: only allowed or approved
            transfers are delivered).
        rule: the rule that allowed (or held, for an approval) the transfer.
        reason: that rule's reason.
        policy_version: the policy version it was allowed (or approved) under.
        encrypt: how it goes out: ``envelope`` (age, to the twin) or ``tls``.
    """

    decision: DecisionName
    rule: str
    reason: str
    policy_version: str
    encrypt: EncryptMode


@dataclass(slots=True)
class Job:
    """A received transfer and what its remaining steps need.

    Attributes:
        transfer: the state machine and metadata of the transfer.
        context: its route and sender as the policy in force names them.
        summary: what the classifier found (None for a review restored
            after a restart until its held files are read).
        info: the encrypted spool.
        fields: the verdict's JSON members (the answer's body), once decided.
        release: the verdict it is delivered under, once allowed or approved.
        upload: the payload streamed to the twin ahead of its header, if any.
        header: the recipient's age header, being built while the verdict
            record is made durable (never sent unless the verdict allows).
    """

    transfer: Transfer
    context: TransferContext
    summary: ScanSummary | None
    info: SpoolInfo
    fields: dict[str, Any] = field(default_factory=dict)
    release: Release | None = None
    upload: PayloadUpload | None = None
    header: asyncio.Future[bytes] | None = None

    @property
    def route(self) -> Route:
        """The route the transfer goes out on."""
        return self.context.route

    @property
    def direction(self) -> Direction:
        """The route's direction (``hk->sz``, ``sz->hk``)."""
        return self.context.route.direction
