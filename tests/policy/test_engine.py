"""Evaluation semantics: first match wins, shadow rules, the default, every condition, traces."""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.classify.labels import BUILTIN_LABELS
from gateway.classify.summary import ScanSummary
from gateway.errors import NotFound, Unauthenticated
from gateway.ledger.base import LedgerCount, MemoryLedger
from gateway.policy import CompiledPolicy, Decision, load_policy
from gateway.policy.cases import offline_ledger, scan_bytes_iter
from gateway.policy.engine import Route, Sender, TransferContext
from tests.policy.conftest import WritePolicy, make_summary

HEADER = """\
categories:
  personal: ["pii.*"]
  sensitive: [pii.cn_resident_id, "sensitive.*"]
  important: [sensitive.genetic]
senders:
  alice: {team: lab, organisation: hku}
  bob: {team: genomics, organisation: bgi}
routes:
  out: {direction: sz->hk, destination: "https://hk.example/in", encrypt: tls}
  in:
    direction: hk->sz
    destination: "https://sz.example/in"
    legal_basis: gba-standard-contract
    encrypt: tls
"""


def policy_with(write_policy: WritePolicy, rules: str, default: str = "") -> CompiledPolicy:
    return load_policy(write_policy({"p.yaml": HEADER + "rules:\n" + rules + default}))


def decide(policy: CompiledPolicy, route: str = "out", sender: str = "alice", **kw: object):  # type: ignore[no-untyped-def]
    ledger = kw.pop("ledger", None)
    summary = make_summary(**kw)  # type: ignore[arg-type]
    return policy.evaluate(policy.context(route, sender), summary, ledger)  # type: ignore[arg-type]


def test_first_matching_rule_decides_and_later_rules_are_not_considered(
    write_policy: WritePolicy,
) -> None:
    policy = policy_with(
        write_policy,
        """
  - {id: one, action: block, reason: r1, when: {route: in}}
  - {id: two, action: allow, reason: r2, when: {route: out}}
  - {id: three, action: review, reason: r3, when: {route: out}}
""",
    )
    d = decide(policy)
    assert (d.action, d.rule, d.reason) == ("allow", "two", "r2")
    assert [t.rule for t in d.trace] == ["one", "two"]
    assert [t.matched for t in d.trace] == [False, True]
    assert d.trace[-1].decided
    assert d.policy_version == policy.version


def test_default_blocks_unless_set(write_policy: WritePolicy) -> None:
    policy = policy_with(
        write_policy, "  - {id: only, action: allow, reason: r, when: {route: in}}\n"
    )
    d = decide(policy)
    assert (d.action, d.rule, d.encrypt) == ("block", "default", None)
    assert "default deny" in d.reason
    allowing = policy_with(
        write_policy,
        "  - {id: only, action: block, reason: r, when: {route: in}}\n",
        "default: {action: allow, reason: open by default}\n",
    )
    d = decide(allowing)
    assert (d.action, d.rule, d.reason, d.encrypt) == ("allow", "default", "open by default", "tls")


def test_shadow_rule_is_traced_but_does_not_decide(write_policy: WritePolicy) -> None:
    policy = policy_with(
        write_policy,
        """
  - {id: watch, action: block, mode: shadow, reason: w, when: {labels: {any: [pii.email]}}}
  - {id: pass, action: allow, reason: p}
""",
    )
    d = decide(policy, labels={"pii.email": (2, 2)})
    assert (d.action, d.rule) == ("allow", "pass")
    assert d.shadow_matches == ("watch",)
    assert (d.trace[0].matched, d.trace[0].decided) == (True, False)
    assert decide(policy).shadow_matches == ()


def test_text_conditions_route_direction_sender_team_organisation_globs(
    write_policy: WritePolicy,
) -> None:
    policy = policy_with(
        write_policy,
        """
  - id: r
    action: allow
    reason: r
    when: {route: "o*", direction: sz->hk, sender: ["x*", "al?ce"], team: lab, organisation: "h*"}
""",
    )
    assert decide(policy).rule == "r"
    d = decide(policy, sender="bob")
    assert d.rule == "default"
    failed = {c.condition for c in d.trace[0].conditions if not c.ok}
    assert failed == {"sender", "team", "organisation"}
    assert decide(policy, route="in").rule == "default"


def test_legal_basis_condition_and_none(write_policy: WritePolicy) -> None:
    policy = policy_with(
        write_policy,
        """
  - {id: gba, action: allow, reason: g, when: {legal_basis: gba-standard-contract}}
  - {id: nobasis, action: review, reason: n, when: {legal_basis: [none]}}
""",
    )
    assert decide(policy, route="in").rule == "gba"
    assert decide(policy, route="out").rule == "nobasis"


@pytest.mark.parametrize(
    ("condition", "labels", "expected"),
    [
        ("{labels: {any: [pii.email, pii.hk_id]}}", {"pii.hk_id": (1, 1)}, True),
        ("{labels: {any: [pii.email]}}", {"pii.hk_id": (1, 1)}, False),
        (
            "{labels: {all: [pii.email, 'pii.hk_*']}}",
            {"pii.email": (1, 1), "pii.hk_id": (1, 1)},
            True,
        ),
        ("{labels: {all: [pii.email, 'pii.hk_*']}}", {"pii.email": (1, 1)}, False),
        ("{labels: {none: ['secret.*']}}", {"pii.email": (1, 1)}, True),
        ("{labels: {none: ['secret.*']}}", {"secret.credential": (1, 1)}, False),
        ("{labels: {count: {'pii.*': '>= 5'}}}", {"pii.email": (3, 1), "pii.hk_id": (2, 2)}, True),
        ("{labels: {count: {'pii.*': '>= 6'}}}", {"pii.email": (3, 1), "pii.hk_id": (2, 2)}, False),
        (
            "{labels: {distinct: {'pii.*': '== 3'}}}",
            {"pii.email": (3, 1), "pii.hk_id": (2, 2)},
            True,
        ),
        ("{categories: {any: [sensitive]}}", {"sensitive.health": (1, 1)}, True),
        ("{categories: {any: [sensitive]}}", {"pii.email": (1, 1)}, False),
        ("{categories: {all: [personal, sensitive]}}", {"pii.cn_resident_id": (1, 1)}, True),
        ("{categories: {all: [personal, important]}}", {"pii.cn_resident_id": (1, 1)}, False),
        ("{categories: {none: [personal, important]}}", {"org.cn_uscc": (4, 4)}, True),
        (
            "{categories: {count: {personal: '> 3'}}}",
            {"pii.email": (2, 2), "pii.hk_id": (2, 1)},
            True,
        ),
        (
            "{categories: {distinct: {personal: '> 3'}}}",
            {"pii.email": (2, 2), "pii.hk_id": (2, 1)},
            False,
        ),
        ("{subjects: '>= 2'}", {"pii.email": (5, 2)}, True),
        ("{subjects: '>= 3'}", {"pii.email": (5, 2)}, False),
    ],
)
def test_content_conditions(
    write_policy: WritePolicy, condition: str, labels: dict[str, tuple[int, int]], expected: bool
) -> None:
    policy = policy_with(
        write_policy, f"  - {{id: r, action: allow, reason: r, when: {condition}}}\n"
    )
    d = decide(policy, labels=labels)
    assert (d.rule == "r") is expected, d.trace[0].conditions


def test_content_type_size_unscannable(write_policy: WritePolicy) -> None:
    policy = policy_with(
        write_policy,
        """
  - {id: hidden, action: block, reason: u, when: {unscannable: true}}
  - {id: big, action: review, reason: b, when: {size: "> 1 MiB"}}
  - {id: csv, action: allow, reason: c, when: {content_type: ["text/csv", "application/*"]}}
""",
    )
    assert decide(policy, unscannable=("zip: encrypted member",)).rule == "hidden"
    assert decide(policy, labels={"content.unscannable": (1, 0)}).rule == "hidden"
    assert decide(policy, size=(1 << 20) + 1).rule == "big"
    assert decide(policy, size=1 << 20, content_type="text/csv").rule == "csv"
    assert decide(policy, content_type="application/zip").rule == "csv"
    assert decide(policy, content_type="text/plain").rule == "default"


def test_ledger_current_and_projected(write_policy: WritePolicy) -> None:
    policy = policy_with(
        write_policy,
        """
  - id: over
    action: block
    reason: o
    when: {ledger: {personal: {projected: ">= 100000"}}}
  - id: was-over
    action: review
    reason: w
    when: {ledger: {personal: {current: ">= 99000"}, sensitive: {projected: "> 0"}}}
""",
    )
    counts = {"personal": LedgerCount(99_998, 100_000), "sensitive": LedgerCount(0, 0)}
    assert decide(policy, ledger=counts).rule == "over"
    counts = {"personal": LedgerCount(99_000, 99_999), "sensitive": LedgerCount(0, 1)}
    d = decide(policy, ledger=counts)
    assert d.rule == "was-over"
    details = [c.detail for c in d.trace[0].conditions]
    assert details == [
        "personal subjects this year including this transfer 99,999 >= 100000 is false"
    ]
    counts = {"personal": LedgerCount(99_000, 99_999), "sensitive": LedgerCount(0, 0)}
    assert decide(policy, ledger=counts).rule == "default"
    with pytest.raises(ValueError, match="ledger count of category 'personal'"):
        decide(policy, ledger={})


def test_encrypt_comes_from_rule_then_route(write_policy: WritePolicy, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import pyrage

    key = pyrage.x25519.Identity.generate().to_public()
    text = HEADER.replace(
        '  out: {direction: sz->hk, destination: "https://hk.example/in", encrypt: tls}',
        f'  out: {{direction: sz->hk, destination: "https://hk.example/in", recipient: {key}}}',
    )
    policy = load_policy(
        write_policy(
            {
                "p.yaml": text
                + """rules:
  - {id: a, action: allow, reason: a, when: {route: in}}
  - {id: b, action: review, reason: b, encrypt: tls, when: {labels: {any: [pii.email]}}}
  - {id: c, action: allow, reason: c}
"""
            }
        )
    )
    assert policy.routes["out"].recipient == str(key)
    assert decide(policy, route="in").encrypt == "tls"
    assert decide(policy, route="out", labels={"pii.email": (1, 1)}).encrypt == "tls"
    assert decide(policy, route="out").encrypt == "envelope"


def test_context_unknown_route_and_sender(write_policy: WritePolicy) -> None:
    policy = policy_with(write_policy, "  - {id: a, action: allow, reason: a}\n")
    with pytest.raises(NotFound):
        policy.context("nowhere", "alice")
    with pytest.raises(Unauthenticated):
        policy.context("out", "mallory")


def test_ledger_digests_per_category(write_policy: WritePolicy) -> None:
    policy = policy_with(write_policy, "  - {id: a, action: allow, reason: a}\n")
    assert policy.ledger_categories == {"personal", "sensitive"}
    only_contact = make_summary({"pii.email": (3, 2), "pii.cn_resident_id": (1, 1)})
    digests = policy.ledger_digests(only_contact)
    assert len(digests["personal"]) == 3
    # Only the resident id is itself sensitive.
    assert digests["sensitive"] == only_contact.digests["pii.cn_resident_id"]
    # A diagnosis makes every identified person in the transfer a sensitive subject,
    # but the diagnosis codes themselves are not people.
    with_health = make_summary({"pii.email": (3, 2), "sensitive.health": (4, 4)})
    digests = policy.ledger_digests(with_health)
    assert digests["sensitive"] == with_health.digests["pii.email"]
    assert digests["personal"] == with_health.digests["pii.email"]
    assert policy.ledger_digests(make_summary({"org.cn_uscc": (2, 2)})) == {
        "personal": frozenset(),
        "sensitive": frozenset(),
    }


def test_trace_is_json_and_never_holds_digests_or_values(write_policy: WritePolicy) -> None:
    policy = policy_with(
        write_policy,
        """
  - {id: a, action: block, reason: a, when: {labels: {any: [pii.email]}, subjects: "> 5"}}
  - {id: b, action: allow, reason: b, when: {categories: {any: [personal]}}}
""",
    )
    summary = make_summary(
        {"pii.email": (3, 2)}, digests={"pii.email": frozenset({b"SECRETDIGEST"})}
    )
    d = policy.evaluate(policy.context("out", "alice"), summary)
    text = json.dumps(d.to_json())
    assert "SECRETDIGEST" not in text
    assert "pii.email (3)" in text
    assert d.to_json()["trace"][0]["conditions"][1] == {
        "condition": "subjects",
        "ok": False,
        "detail": "subjects 2 > 5 is false",
    }


def test_evaluation_is_pure_and_repeatable(write_policy: WritePolicy) -> None:
    policy = policy_with(
        write_policy, "  - {id: a, action: allow, reason: a, when: {route: out}}\n"
    )
    summary = make_summary({"pii.email": (1, 1)})
    ctx = policy.context("out", "alice")
    assert policy.evaluate(ctx, summary) == policy.evaluate(ctx, summary)


def test_attribute_conditions_any_all_none_and_unknown(write_policy: WritePolicy) -> None:
    policy = policy_with(
        write_policy,
        """
  - id: human
    action: block
    reason: h
    when: {attributes: {organism: {any: [Homo sapiens, unknown]}}}
  - id: mixed
    action: review
    reason: m
    when: {attributes: {organism: {all: ["Escherichia *", Staphylococcus aureus]}}}
  - id: bacterial
    action: allow
    reason: a
    when: {attributes: {organism: {none: [Mus musculus]}, assembly: {any: ["ASM*"]}}}
""",
    )

    def rule(**attributes: str) -> str:
        return str(decide(policy, attributes=attributes).rule)

    assert rule() == "human"  # not stated: the one value 'unknown'
    assert rule(organism="unknown") == "human"  # stated as unknown by the classifier
    assert rule(organism="Homo sapiens", assembly="GRCh38") == "human"
    assert rule(organism="Escherichia coli; unknown", assembly="ASM584v2") == "human"
    assert rule(organism="Escherichia coli; Staphylococcus aureus") == "mixed"
    assert rule(organism="Escherichia coli") == "default"  # 'all' needs both globs
    assert rule(organism="Escherichia coli", assembly="ASM584v2") == "bacterial"
    assert rule(organism="Escherichia coli; Mus musculus", assembly="ASM584v2") == "default"
    assert rule(organism="Homo Sapiens") == "default"  # exact, case included


def test_attribute_condition_trace(write_policy: WritePolicy) -> None:
    policy = policy_with(
        write_policy,
        """
  - id: r
    action: block
    reason: r
    when:
      attributes:
        organism: {any: [Homo sapiens, unknown], none: [other], all: ["*", unknown]}
""",
    )
    stated = decide(policy, attributes={"organism": "Escherichia coli; unknown"})
    assert [(c.condition, c.ok, c.detail) for c in stated.trace[0].conditions] == [
        (
            "attributes.organism.any",
            True,
            "organism 'Escherichia coli', 'unknown': matches unknown",
        ),
        (
            "attributes.organism.all",
            True,
            "organism 'Escherichia coli', 'unknown': matches *, unknown",
        ),
        (
            "attributes.organism.none",
            True,
            "organism 'Escherichia coli', 'unknown': matches none of [other]",
        ),
    ]
    assert stated.rule == "r"
    absent = decide(policy)
    assert absent.trace[0].conditions[0].detail == (
        "organism not stated (unknown): matches unknown"
    )
    other = decide(policy, attributes={"organism": "other"})
    assert [(c.ok, c.detail) for c in other.trace[0].conditions] == [
        (False, "organism 'other': matches none of [Homo sapiens, unknown]"),
        (False, "organism 'other': matches *; nothing matches unknown"),
        (False, "organism 'other': matches other"),
    ]
    assert other.rule == "default"
    assert json.loads(json.dumps(other.to_json()))["trace"][0]["conditions"][0] == {
        "condition": "attributes.organism.any",
        "ok": False,
        "detail": "organism 'other': matches none of [Homo sapiens, unknown]",
    }


# --- properties over the shipped policy: first match wins, shadow never decides


@functools.cache
def _shipped() -> CompiledPolicy:
    return load_policy(Path(__file__).resolve().parents[2] / "policies", require_keys=False)


_STATS = st.dictionaries(
    st.sampled_from(BUILTIN_LABELS),
    st.tuples(st.integers(1, 10**6), st.integers(0, 10**6)).map(lambda t: (t[0], min(t))),
    max_size=6,
)
_ROUTES = st.builds(
    Route,
    name=st.sampled_from(["sz-lab", "sz-clinical", "other"]),
    direction=st.sampled_from(["hk->sz", "sz->hk"]),
    destination=st.just("https://h/"),
    recipient=st.none(),
    legal_basis=st.sampled_from(
        [None, "gba-standard-contract", "cac-standard-contract", "cac-security-assessment"]
    ),
    encrypt=st.sampled_from(["envelope", "tls"]),
)
_SENDERS = st.builds(
    Sender,
    id=st.just("s"),
    team=st.just("t"),
    organisation=st.sampled_from(["sz-genomics-lab", "hk-park-lab", "elsewhere"]),
)


@given(
    labels=_STATS,
    route=_ROUTES,
    sender=_SENDERS,
    current=st.tuples(st.integers(0, 2 * 10**6), st.integers(0, 2 * 10**6)),
    organism=st.sampled_from(
        [None, "Homo sapiens", "Escherichia coli", "Escherichia coli; unknown"]
    ),
)
def test_decision_is_the_first_matching_enforced_rule(
    labels: dict[str, tuple[int, int]],
    route: Route,
    sender: Sender,
    current: tuple[int, int],
    organism: str | None,
) -> None:
    attributes = {} if organism is None else {"organism": organism}
    summary = make_summary(labels, size=1000, attributes=attributes)
    digests = _shipped().ledger_digests(summary)
    counts = {
        c: LedgerCount(n, n + len(digests[c]))
        for c, n in zip(("personal", "sensitive"), current, strict=True)
    }
    d = _shipped().evaluate(TransferContext(route, sender), summary, counts)
    decided = [t for t in d.trace if t.decided]
    assert all(t.mode == "enforce" for t in decided)
    assert all(not t.matched for t in d.trace[:-1] if t.mode == "enforce")
    if decided:
        assert decided == [d.trace[-1]]
        assert d.rule == decided[0].rule
        assert len(d.trace) <= len(_shipped().rules)
    else:
        assert d.rule == "default"
        assert len(d.trace) == len(_shipped().rules)
    assert (d.encrypt is None) == (d.action == "block")
    assert d.shadow_matches == tuple(t.rule for t in d.trace if t.mode == "shadow" and t.matched)
    text = json.dumps(d.to_json())
    assert all(digest.decode() not in text for ds in summary.digests.values() for digest in ds)


# --- counts of people err upwards when the classifier's distinct-value cap was reached


def _capped(
    labels: dict[str, tuple[int, int]], *, capped: bool = True
) -> tuple[ScanSummary, dict[str, frozenset[bytes]]]:
    """A summary built directly (independent of the classifier's cap value)."""
    summary = make_summary(labels, size=10**8, content_type="text/csv")
    summary = dataclasses.replace(summary, distinct_capped=capped)
    return summary, dict(summary.digests)


def _export(summary: ScanSummary, legal_basis: str | None) -> Decision:
    """Evaluate on the shipped policy as the server does: digests, fresh ledger, evaluate."""
    policy = _shipped()
    route = Route("out", "sz->hk", "https://h/", None, legal_basis, "envelope")
    context = TransferContext(route, Sender("s", "t", "sz-univ"))
    digests = policy.ledger_digests(summary, route.direction)
    counts = {c: LedgerCount(0, len(d)) for c, d in digests.items()}
    return policy.evaluate(context, summary, counts)


def test_capped_scan_cannot_hide_sensitive_subjects_behind_e_mails() -> None:
    # 250,000 e-mails fill the cap; the 20,000 resident ids after them get no digest.
    summary, _ = _capped({"pii.email": (250_000, 250_000), "pii.cn_resident_id": (20_000, 0)})
    d = _export(summary, "cac-standard-contract")
    assert (d.action, d.rule) == ("block", "export-sensitive-over-10k")
    detail = next(c.detail for c in d.trace[-1].conditions if c.condition.startswith("ledger"))
    assert detail.startswith("sensitive subjects this year including this transfer 20,000 (")
    assert "upper bound" in detail
    assert "20,000 findings not hashed" in detail
    # The same counts without the cap are exact: 0 sensitive subjects would be allowed.
    exact, _ = _capped(
        {"pii.email": (250_000, 250_000), "pii.cn_resident_id": (20_000, 0)}, capped=False
    )
    assert _export(exact, "cac-standard-contract").rule == "export-with-mechanism-allow"


def test_capped_scan_counts_every_phone_finding_against_the_million() -> None:
    summary, _ = _capped({"pii.cn_phone": (1_100_000, 250_000)})
    d = _export(summary, "cac-standard-contract")
    assert (d.action, d.rule) == ("block", "export-personal-over-1m")
    assert "personal subjects this year including this transfer 1,100,000 (" in json.dumps(
        d.to_json()
    )
    assert _export(summary, None).rule == "export-personal-over-1m"
    # Below the cap the digests are exact: 250,000 phones under a contract pass.
    exact, _ = _capped({"pii.cn_phone": (1_100_000, 250_000)}, capped=False)
    assert _export(exact, "cac-standard-contract").rule == "export-with-mechanism-allow"


def test_capped_scan_uses_upper_bounds_for_subjects_and_distinct(
    write_policy: WritePolicy,
) -> None:
    policy = policy_with(
        write_policy,
        """
  - {id: many-people, action: review, reason: s, when: {subjects: ">= 1000"}}
  - {id: many-values, action: block, reason: d, when: {labels: {distinct: {"pii.*": ">= 500"}}}}
""",
    )
    ctx = policy.context("out", "alice")
    capped, _ = _capped({"pii.email": (400, 100), "pii.hk_phone": (2_000, 0)})
    d = policy.evaluate(ctx, capped)
    assert d.rule == "many-people"
    assert d.trace[0].conditions[0].detail == (
        "subjects 2,000 (upper bound: the classifier's distinct-value cap was reached)"
        " >= 1000 is true"
    )
    capped, _ = _capped({"pii.email": (600, 100)})
    d = policy.evaluate(ctx, capped)
    assert d.rule == "many-values"
    assert "distinct values 600 (upper bound" in d.trace[1].conditions[0].detail
    exact, _ = _capped({"pii.email": (600, 100), "pii.hk_phone": (2_000, 0)}, capped=False)
    assert policy.evaluate(ctx, exact).rule == "default"


# --- the ledger counts exports (sz->hk) unless the policy says otherwise


def test_ledger_counts_only_the_declared_directions(write_policy: WritePolicy) -> None:
    policy = policy_with(write_policy, "  - {id: a, action: allow, reason: a}\n")
    assert policy.ledger_directions == {"sz->hk"}
    summary = make_summary({"pii.email": (3, 2), "pii.cn_resident_id": (1, 1)})
    exported = policy.ledger_digests(summary, "sz->hk")
    assert len(exported["personal"]) == 3
    assert policy.ledger_digests(summary, "hk->sz") == {
        "personal": frozenset(),
        "sensitive": frozenset(),
    }
    # The call shape without a direction still counts (the stricter reading).
    assert policy.ledger_digests(summary) == exported
    both = load_policy(
        write_policy(
            {
                "p.yaml": HEADER + "rules:\n  - {id: a, action: allow, reason: a}\n",
                "q.yaml": "ledger: {directions: [sz->hk, hk->sz]}\n",
            }
        )
    )
    assert both.ledger_digests(summary, "hk->sz") == exported


def test_uncounted_direction_projects_the_current_total(write_policy: WritePolicy) -> None:
    policy = policy_with(
        write_policy,
        """
  - {id: over, action: block, reason: o, when: {ledger: {personal: {projected: ">= 100"}}}}
""",
    )
    summary = make_summary({"pii.email": (50, 50)})
    # Even counts that include this transfer (a caller using the old call shape)
    # do not make an hk->sz transfer an export.
    counts = {"personal": LedgerCount(99, 149), "sensitive": LedgerCount(0, 0)}
    d = policy.evaluate(policy.context("in", "alice"), summary, counts)
    assert d.rule == "default"
    assert d.trace[0].conditions[0].detail == (
        "personal subjects this year including this transfer 99 "
        "(hk->sz transfers are not counted) >= 100 is false"
    )
    assert policy.evaluate(policy.context("out", "alice"), summary, counts).rule == "over"


async def test_server_flow_records_exports_only(write_policy: WritePolicy) -> None:
    """What the egress server does under the ledger lock: count, decide, add if allowed."""
    policy = policy_with(write_policy, "  - {id: a, action: allow, reason: a}\n")
    ledger = MemoryLedger()
    summary = make_summary({"pii.email": (3, 3)})
    for route in ("in", "out", "in"):
        context = policy.context(route, "alice")
        digests = policy.ledger_digests(summary, context.route.direction)
        async with ledger.transaction("hku", 2026) as tx:
            counts = {c: await tx.count(c, d) for c, d in digests.items()}
            assert policy.evaluate(context, summary, counts).action == "allow"
            for category, values in digests.items():
                if values:
                    await tx.add(category, values)
    totals = {t.category: t.subjects for t in await ledger.totals()}
    assert totals == {"personal": 3}


# --- custom detectors flagged personal: true count as people


def test_custom_personal_detector_counts_in_the_ledger_and_personal_category(
    write_policy: WritePolicy,
) -> None:
    policy = load_policy(
        write_policy(
            {
                "p.yaml": HEADER
                + """\
detectors:
  custom.staff_no: {patterns: ['STF-[0-9]{6}'], personal: true}
  custom.project: {keywords: [Falcon]}
rules:
  - {id: no-people, action: allow, reason: a, when: {categories: {none: [personal]}}}
"""
            }
        )
    )
    assert "personal" in policy.categories_of("custom.staff_no")
    assert "personal" not in policy.categories_of("custom.project")
    summary = scan_bytes_iter(policy, [b"STF-000001 STF-000002 STF-000001 Falcon\n"])
    assert summary.labels["custom.staff_no"].distinct == 2
    digests = policy.ledger_digests(summary, "sz->hk")
    assert digests["personal"] == summary.digests["custom.staff_no"]
    assert digests["sensitive"] == frozenset()
    d = policy.evaluate(
        policy.context("out", "alice"), summary, offline_ledger(policy, summary, {})
    )
    assert d.rule == "default"  # not "no personal information"
