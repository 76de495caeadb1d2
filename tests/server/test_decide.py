"""Deciding under the ledger lock: the order of counting, recording and committing.

These are the durability rules of SPEC §7 as :func:`decide_under_lock` keeps them,
checked against a ledger that logs what happens when: subjects added are committed
only once the decision's record is durable (a failed record rolls them back); a
transaction that wrote nothing may commit while a verdict's record is on its way,
never an approval's; a ledger failure is a 503 that does not name the ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Collection
from types import SimpleNamespace
from typing import Any, cast

import pytest

from gateway.audit.receipt import Receipt
from gateway.errors import Unavailable
from gateway.ledger.base import LedgerCount, LedgerTransaction, LedgerUnavailable
from gateway.obs.metrics import Metrics
from gateway.server.decide import Ruling, decide_under_lock
from gateway.server.egress_state import EgressState

RECEIPT = cast(Receipt, object())


class _Ledger(LedgerTransaction):
    """A ledger that logs counts, additions, commits and rollbacks in order."""

    def __init__(self, log: list[str], *, fail: Exception | None = None) -> None:
        self.log = log
        self.fail = fail

    async def count(self, category: str, digests: Collection[bytes]) -> LedgerCount:
        return LedgerCount(0, len(digests))

    async def add(self, category: str, digests: Collection[bytes]) -> int:
        self.log.append(f"add {category}")
        return len(digests)

    @contextlib.asynccontextmanager
    async def transaction(self, organisation: str, year: int) -> AsyncIterator[_Ledger]:
        if self.fail is not None:
            raise self.fail
        try:
            yield self
        except BaseException:
            self.log.append("rollback")
            raise
        self.log.append("commit")


def _state(ledger: _Ledger) -> tuple[EgressState, Metrics]:
    metrics = Metrics()
    tracked: list[asyncio.Future[Any]] = []
    state = SimpleNamespace(
        services=SimpleNamespace(ledger=ledger, metrics=metrics), track=tracked.append
    )
    return cast(EgressState, state), metrics


def _judge(
    log: list[str],
    digests: dict[str, frozenset[bytes]],
    *,
    counts: bool,
    may_trail: bool,
    fail: Exception | None = None,
) -> Any:
    async def record() -> Receipt:
        await asyncio.sleep(0.01)  # an fsync
        if fail is not None:
            raise fail
        log.append("record durable")
        return RECEIPT

    async def judge(tx: LedgerTransaction) -> Ruling:
        for category, values in digests.items():
            await tx.count(category, values)
        return Ruling(
            cast(Any, None),
            cast(Any, None),
            cast(Any, None),
            digests,
            counts=counts,
            record=record,
            may_trail=may_trail,
        )

    return judge


async def _decide(ledger: _Ledger, judge: Any) -> Receipt:
    state, _ = _state(ledger)
    _, receipt = await decide_under_lock(state, "hku", judge, unavailable=lambda: "down")
    return receipt


@pytest.mark.parametrize("may_trail", [True, False])
async def test_added_subjects_commit_only_after_the_record_is_durable(may_trail: bool) -> None:
    log: list[str] = []
    digests = {"pii.cn": frozenset({b"a", b"b"}), "pii.hk": frozenset()}
    judge = _judge(log, digests, counts=True, may_trail=may_trail)
    assert await _decide(_Ledger(log), judge) is RECEIPT
    # A category without subjects is not written (no fsync for a clean transfer).
    assert log == ["add pii.cn", "record durable", "commit"]


async def test_a_verdict_that_wrote_nothing_commits_while_its_record_is_on_its_way() -> None:
    log: list[str] = []
    judge = _judge(log, {"pii.cn": frozenset({b"a"})}, counts=False, may_trail=True)
    assert await _decide(_Ledger(log), judge) is RECEIPT
    assert log == ["commit", "record durable"]  # and still durable before the answer


async def test_an_approval_that_wrote_nothing_still_records_inside_the_transaction() -> None:
    log: list[str] = []
    judge = _judge(log, {"pii.cn": frozenset()}, counts=True, may_trail=False)
    assert await _decide(_Ledger(log), judge) is RECEIPT
    assert log == ["record durable", "commit"]


async def test_a_record_that_fails_rolls_the_counts_back() -> None:
    log: list[str] = []
    failure = Unavailable("the audit log cannot be written")
    judge = _judge(log, {"pii.cn": frozenset({b"a"})}, counts=True, may_trail=True, fail=failure)
    with pytest.raises(Unavailable) as raised:
        await _decide(_Ledger(log), judge)
    assert raised.value is failure
    assert log == ["add pii.cn", "rollback"]


async def test_a_ledger_failure_is_a_503_that_does_not_name_the_ledger() -> None:
    log: list[str] = []
    ledger = _Ledger(log, fail=LedgerUnavailable("sqlite /srv/secret/ledger.db: locked"))
    state, metrics = _state(ledger)
    judge = _judge(log, {}, counts=True, may_trail=True)
    with pytest.raises(Unavailable) as raised:
        await decide_under_lock(state, "hku", judge, unavailable=lambda: "the ledger is down")
    assert (type(raised.value), raised.value.detail) == (Unavailable, "the ledger is down")
    assert "secret" not in str(raised.value)
    reason = {"reason": "ledger"}
    assert metrics.registry.get_sample_value("gateway_fail_closed_total", reason) == 1
