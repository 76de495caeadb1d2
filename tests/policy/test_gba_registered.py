"""GBA registration (issue 15, legal error 4): the GBA Standard Contract binds
GBA-registered parties only; organisations and route recipients say whether they are."""

from __future__ import annotations

import pytest

from gateway.policy import PolicyLoadError, load_policy
from tests.policy.conftest import WritePolicy, make_summary

POLICY = """\
senders:
  hk-lab: {team: t, organisation: registered-org}
  other: {team: t, organisation: unknown-org}
organisations:
  registered-org: {gba_registered: true}
routes:
  gba:
    direction: hk->sz
    destination: "https://sz.example/a"
    encrypt: tls
    recipient_gba_registered: true
  gba-unregistered: {direction: hk->sz, destination: "https://sz.example/b", encrypt: tls}
rules:
  - id: not-registered
    action: block
    reason: both parties must be GBA-registered
    when: {gba_registered: false}
  - id: registered
    action: allow
    reason: fine
"""


@pytest.mark.parametrize(
    ("route", "sender", "rule"),
    [
        ("gba", "hk-lab", "registered"),
        ("gba", "other", "not-registered"),
        ("gba-unregistered", "hk-lab", "not-registered"),
        ("gba-unregistered", "other", "not-registered"),
    ],
)
def test_both_parties_must_be_registered(
    write_policy: WritePolicy, route: str, sender: str, rule: str
) -> None:
    policy = load_policy(write_policy({"p.yaml": POLICY}))
    decision = policy.evaluate(policy.context(route, sender), make_summary({"pii.email": (1, 1)}))
    assert decision.rule == rule
    detail = next(
        c.detail for t in decision.trace for c in t.conditions if c.condition == "gba_registered"
    )
    assert "organisation" in detail
    assert "recipient" in detail


def test_the_policy_knows_its_registered_organisations(write_policy: WritePolicy) -> None:
    policy = load_policy(write_policy({"p.yaml": POLICY}))
    assert policy.gba_organisations == frozenset({"registered-org"})
    assert policy.senders["hk-lab"].gba_registered
    assert not policy.senders["other"].gba_registered
    assert policy.routes["gba"].recipient_gba_registered
    assert not policy.routes["gba-unregistered"].recipient_gba_registered


def test_an_organisation_declared_twice_is_an_error(write_policy: WritePolicy) -> None:
    directory = write_policy(
        {"p.yaml": POLICY, "q.yaml": "organisations:\n  registered-org: {gba_registered: false}\n"}
    )
    with pytest.raises(PolicyLoadError) as raised:
        load_policy(directory)
    (error,) = [str(e) for e in raised.value.errors]
    assert "q.yaml:2:3" in error
    assert "organisation 'registered-org' is already defined" in error


def test_organisations_are_part_of_the_version(write_policy: WritePolicy) -> None:
    with_orgs = load_policy(write_policy({"p.yaml": POLICY})).version
    without = load_policy(
        write_policy(
            {
                "p.yaml": POLICY.replace("  registered-org: {gba_registered: true}\n", "").replace(
                    "organisations:\n", ""
                )
            }
        )
    ).version
    assert with_orgs != without
