"""The transfer state machine: legal paths, illegal transitions, the zero-leak gate."""

from __future__ import annotations

import pytest

from gateway.policy.model import Action
from gateway.server.transfer import IllegalTransition, State, Transfer, new_transfer_id


def _transfer() -> Transfer:
    return Transfer(new_transfer_id(), "sz-lab", "a.csv", "hk-research", "hku")


def test_allowed_path_to_delivered() -> None:
    t = _transfer()
    t.advance(State.CLASSIFIED)
    t.advance(State.ALLOWED)
    t.begin_forwarding()
    t.advance(State.DELIVERED)
    assert t.state.final
    assert [s for s, _ in t.history] == [
        "receiving",
        "classified",
        "allowed",
        "forwarding",
        "delivered",
    ]


def test_review_then_approve_forwards() -> None:
    t = _transfer()
    t.advance(State.CLASSIFIED)
    t.advance(State.HELD)
    t.advance(State.APPROVED)
    t.begin_forwarding()
    assert t.state is State.FORWARDING


@pytest.mark.parametrize(
    "path",
    [
        [State.CLASSIFIED, State.BLOCKED],
        [State.CLASSIFIED, State.HELD],
        [State.CLASSIFIED],
        [],
        [State.CLASSIFIED, State.HELD, State.REJECTED],
    ],
)
def test_forwarding_without_allow_verdict_raises(path: list[State]) -> None:
    t = _transfer()
    for state in path:
        t.advance(state)
    with pytest.raises(IllegalTransition):
        t.begin_forwarding()


def test_skipping_classification_is_illegal() -> None:
    t = _transfer()
    with pytest.raises(IllegalTransition):
        t.advance(State.ALLOWED)
    with pytest.raises(IllegalTransition):
        t.advance(State.DELIVERED)


def test_final_states_do_not_move() -> None:
    t = _transfer()
    t.advance(State.CLASSIFIED)
    t.advance(State.BLOCKED)
    with pytest.raises(IllegalTransition):
        t.advance(State.ALLOWED)
    t.end(State.FAILED)  # already final: no change
    assert t.state is State.BLOCKED
    with pytest.raises(IllegalTransition):
        t.end(State.ALLOWED)


def test_ids_are_unique_and_unguessable() -> None:
    ids = {new_transfer_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 34 and i.startswith("t_") for i in ids)


def test_status_json_has_state_and_verdict() -> None:
    t = _transfer()
    t.verdict = {"decision": "allow", "rule": "r", "state": "ignored"}
    out = t.status_json()
    assert out["state"] == "receiving"
    assert out["decision"] == "allow"
    assert out["history"][0]["state"] == "receiving"


@pytest.mark.parametrize(
    ("action", "state", "event"),
    [
        ("allow", State.ALLOWED, "allowed"),
        ("block", State.BLOCKED, "blocked"),
        ("review", State.HELD, "review"),
    ],
)
def test_a_verdict_names_its_state_and_its_records_event(
    action: Action, state: State, event: str
) -> None:
    t = _transfer()
    t.classified()
    assert t.decided(action) == event
    assert t.state is state


def test_review_decisions_and_delivery_are_named_transitions() -> None:
    approved, rejected = _transfer(), _transfer()
    for t in (approved, rejected):
        t.classified()
        t.decided("review")
    approved.approved()
    approved.begin_forwarding()
    approved.delivered()
    rejected.rejected()
    assert (approved.state, rejected.state) == (State.DELIVERED, State.REJECTED)
    assert (approved.state.event, rejected.state.event) == ("delivered", "rejected")


def test_end_names_the_final_record_also_when_already_final() -> None:
    t = _transfer()
    assert t.end(State.ABORTED) == "aborted"
    # An abort racing a completion: the state stays, the record still says how it ended.
    assert t.end(State.FAILED) == "failed"
    assert t.state is State.ABORTED


@pytest.mark.parametrize("state", [State.RECEIVING, State.CLASSIFIED, State.FORWARDING])
def test_a_state_without_a_record_has_no_event(state: State) -> None:
    with pytest.raises(IllegalTransition):
        _ = state.event
