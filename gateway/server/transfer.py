"""The life of one transfer as an explicit state machine (STYLE.md §2).

Everything that moves a transfer from one state to the next lives here:
callers say what happened (a verdict, an approval, a delivery, an end) and
the machine picks the state and names the audit event that records it (a
state's value is its record's event, SPEC §7).

Every transfer walks one linear pipeline::

    receiving ─> classified ─> allowed ──> forwarding ─> delivered
                     │    └──> held ─> approved ─┘   └─> failed
                     │          └──> rejected
                     └──> blocked
    (any non-final state) ─> aborted | failed

The forwarder asks :meth:`Transfer.begin_forwarding`, which raises unless the
transfer carries a completed allow (or approval) verdict: that one check is the
"zero leak" gate. Illegal transitions raise :class:`IllegalTransition`, a bug
in the gateway, which the error middleware turns into a fail-closed 500.
"""

from __future__ import annotations

import enum
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, cast

from gateway.audit.records import TransferEvent
from gateway.errors import GatewayError
from gateway.policy.model import Action


class State(enum.StrEnum):
    """Where a transfer is in its pipeline; the final states end it."""

    RECEIVING = "receiving"
    CLASSIFIED = "classified"
    ALLOWED = "allowed"
    BLOCKED = "blocked"
    HELD = "review"
    APPROVED = "approved"
    REJECTED = "rejected"
    FORWARDING = "forwarding"
    DELIVERED = "delivered"
    ABORTED = "aborted"
    FAILED = "failed"

    @property
    def final(self) -> bool:
        """Whether nothing more can happen to the transfer."""
        return self in _FINAL

    @property
    def event(self) -> TransferEvent:
        """The event of the audit record that says the transfer reached this state.

        Raises:
            IllegalTransition: the state has no record of its own (receiving,
                classified, forwarding).
        """
        if self not in _RECORDED:
            raise IllegalTransition(f"{self.value} has no audit record of its own")
        return cast(TransferEvent, self.value)


_FINAL = frozenset({State.BLOCKED, State.REJECTED, State.DELIVERED, State.ABORTED, State.FAILED})
#: The states a record of their own says a transfer reached (SPEC §7 events).
_RECORDED = _FINAL | {State.ALLOWED, State.HELD, State.APPROVED}
#: The state each policy action leads a classified transfer to.
_VERDICT: dict[Action, State] = {
    "allow": State.ALLOWED,
    "block": State.BLOCKED,
    "review": State.HELD,
}

#: Every legal edge of the pipeline. Anything else is a gateway bug.
_EDGES: dict[State, frozenset[State]] = {
    State.RECEIVING: frozenset({State.CLASSIFIED, State.ABORTED, State.FAILED}),
    State.CLASSIFIED: frozenset(
        {State.ALLOWED, State.BLOCKED, State.HELD, State.ABORTED, State.FAILED}
    ),
    State.ALLOWED: frozenset({State.FORWARDING, State.FAILED, State.ABORTED}),
    State.HELD: frozenset({State.APPROVED, State.REJECTED, State.FAILED}),
    State.APPROVED: frozenset({State.FORWARDING, State.FAILED, State.ABORTED}),
    State.FORWARDING: frozenset({State.DELIVERED, State.FAILED, State.ABORTED}),
}


class IllegalTransition(GatewayError):
    """The pipeline was asked to skip or repeat a step (a gateway bug: fail closed)."""

    status = 500
    slug = "illegal-transition"
    title = "Internal gateway error"


#: What :func:`new_transfer_id` makes; a path segment that is not one is never
#: echoed or logged (it may be anything a client typed).
TRANSFER_ID = re.compile(r"t_[0-9a-f]{32}")


def new_transfer_id() -> str:
    """A fresh transfer id: ``t_`` + 128 random bits, URL-safe, unguessable.

    Unguessable because ``GET /v1/transfers/{id}`` shows a verdict to anyone
    who can reach the API with a sender token.
    """
    return "t_" + secrets.token_hex(16)


@dataclass(slots=True)
class Transfer:
    """One transfer's metadata and state; never its payload.

    Attributes:
        id: the transfer id returned to the sender.
        route: route name.
        path: the file name the sender gave (delivered under this name).
        sender: sender identity.
        organisation: the sender's organisation (ledger key).
        state: current state.
        started: monotonic start time.
        created_at: wall-clock start (Unix seconds) for the status API.
        verdict: the JSON body of the verdict (decision, rule, labels …)
            once decided; what ``GET /v1/transfers/{id}`` shows.
        history: (state, Unix time) of every transition, for the status API.
        timings: seconds spent per pipeline stage (``receive``, ``decide``,
            ``forward``), for the audit record and the benchmark.
        justification: what the sender said the transfer is for (the
            ``X-Gateway-Justification`` header), checked, or None.
        name_clean: the classifier scanned the whole name and found nothing
            in it. Only then does the status API show ``path``: a name that
            holds a value (``scan_11010519491231002X.csv``), or was never
            scanned (the transfer failed first), is withheld (SPEC §3.2, §5).
        replaces: the transfer whose delivered file of the same name this one
            may replace (the sender's ``X-Gateway-Replace``), or None.
    """

    id: str
    route: str
    path: str
    sender: str
    organisation: str
    state: State = State.RECEIVING
    started: float = field(default_factory=time.monotonic)
    created_at: float = field(default_factory=time.time)
    verdict: dict[str, Any] = field(default_factory=dict)
    history: list[tuple[str, float]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    name_clean: bool = False
    justification: str | None = None
    replaces: str | None = None
    _mark: float = 0.0

    def __post_init__(self) -> None:
        self.history.append((self.state.value, self.created_at))
        self._mark = self.started

    def mark(self, stage: str) -> None:
        """Record the time since the previous mark (or the start) as ``stage``."""
        now = time.monotonic()
        self.timings[stage] = self.timings.get(stage, 0.0) + now - self._mark
        self._mark = now

    def timings_us(self) -> dict[str, int]:
        """Stage timings and the total so far, in integer microseconds (audit records)."""
        out = {stage: int(seconds * 1_000_000) for stage, seconds in self.timings.items()}
        out["total"] = int((time.monotonic() - self.started) * 1_000_000)
        return out

    def advance(self, new: State) -> None:
        """Move to ``new``.

        Raises:
            IllegalTransition: ``new`` does not follow the current state.
        """
        if new not in _EDGES.get(self.state, frozenset()):
            raise IllegalTransition(
                f"transfer {self.id}: illegal transition {self.state.value} -> {new.value}"
            )
        self.state = new
        self.history.append((new.value, time.time()))

    def classified(self) -> None:
        """The whole body was received and classified."""
        self.advance(State.CLASSIFIED)

    def decided(self, action: Action) -> TransferEvent:
        """The policy's verdict ``action``: move on; the event of the verdict's record."""
        new = _VERDICT[action]
        self.advance(new)
        return new.event

    def approved(self) -> None:
        """An officer's approval of a held review was recorded."""
        self.advance(State.APPROVED)

    def rejected(self) -> None:
        """An officer's rejection (or the expiry) of a held review was recorded."""
        self.advance(State.REJECTED)

    def delivered(self) -> None:
        """The destination holds the file."""
        self.advance(State.DELIVERED)

    def begin_forwarding(self) -> None:
        """The zero-leak gate: only an allowed or approved transfer may send bytes.

        Raises:
            IllegalTransition: the transfer has no completed allow verdict.
        """
        if self.state not in (State.ALLOWED, State.APPROVED):
            raise IllegalTransition(
                f"transfer {self.id}: refusing to forward in state {self.state.value}"
            )
        self.advance(State.FORWARDING)

    def end(self, final: State) -> TransferEvent:
        """Move to a final state unless already final (aborts race with completion).

        Returns:
            The event of the record that says how the transfer ended (``final``'s).
        """
        if final not in _FINAL:
            raise IllegalTransition(f"transfer {self.id}: {final.value} is not a final state")
        if not self.state.final:
            self.advance(final)
        return final.event

    def status_json(self) -> dict[str, Any]:
        """The body of ``GET /v1/transfers/{id}``: verdict fields, state and history.

        ``path`` is the name only when :attr:`name_clean`; otherwise it is
        ``null`` and ``path_withheld`` is true: a transfer blocked or held
        because its name holds a Resident ID must not hand the number back.
        """
        out: dict[str, Any] = {
            "transfer_id": self.id,
            "route": self.route,
            "path": self.path if self.name_clean else None,
            "path_withheld": not self.name_clean,
            "state": self.state.value,
        }
        out.update({k: v for k, v in self.verdict.items() if k not in out})
        out["history"] = [{"state": s, "at": round(t, 3)} for s, t in self.history]
        return out
