"""``policy test`` cases: the shipped packs pass, failures diff, bad case files are located."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.policy import PolicyLoadError, run_cases
from gateway.policy.cases import offline_ledger, scan_bytes_iter
from tests.policy.conftest import WritePolicy

SHIPPED = Path(__file__).resolve().parents[2] / "policies"

POLICY = """\
categories: {personal: ["pii.*"]}
routes:
  out: {direction: sz->hk, destination: "https://hk.example/in", encrypt: tls}
senders:
  alice: {team: lab, organisation: hku}
rules:
  - id: many
    action: block
    reason: m
    when: {ledger: {personal: {projected: ">= 10"}}}
  - {id: mail, action: review, reason: e, when: {labels: {any: [pii.email]}}}
"""


def test_shipped_packs_pass_and_every_pack_has_cases() -> None:
    report = run_cases(SHIPPED)
    assert report.failed == (), [r.diff() for r in report.failed]
    packs = {Path(p).name.removesuffix("_test.yaml") for p in report.files}
    policies = {p.stem for p in SHIPPED.glob("*.yaml") if not p.stem.endswith("_test")}
    assert packs == policies
    decided = {r.decision.rule for r in report.results if r.decision is not None}
    missing = {rule.id for rule in report.policy.rules} - decided
    assert missing == set(), f"rules no shipped case exercises: {missing}"


def test_cases_pass_fail_and_diff(write_policy: WritePolicy) -> None:
    directory = write_policy(
        {
            "p.yaml": POLICY,
            "p_test.yaml": """\
cases:
  - name: mail reviewed
    route: out
    sender: alice
    text: "a.b@example.org"
    expect: {action: review, rule: mail}
  - name: wrong on purpose
    route: out
    sender: alice
    text: "nothing"
    expect: {action: allow, rule: mail}
  - name: ledger state counts
    route: out
    sender: alice
    text: "a.b@example.org"
    ledger: {personal: 9}
    expect: {action: block, rule: many}
  - name: ad hoc route
    route: {direction: hk->sz}
    sender: {organisation: x}
    file: data/s.txt
    expect: {action: block, rule: default, encrypt: tls}
  - {name: missing sample, route: out, sender: alice, file: nope.txt,
     expect: {action: block, rule: default}}
  - {name: unknown route, route: nowhere, sender: alice, text: x,
     expect: {action: block, rule: default}}
""",
        }
    )
    (directory / "data").mkdir()
    (directory / "data" / "s.txt").write_text("plain words\n")
    report = run_cases(directory)
    results = {r.name: r for r in report.results}
    assert results["mail reviewed"].passed
    assert results["ledger state counts"].passed
    wrong = results["wrong on purpose"]
    assert not wrong.passed
    diff = wrong.diff()
    assert diff[:5] == [
        "  - action: allow",
        "  + action: block",
        "  - rule: mail",
        "  + rule: default",
        "  trace (the rules that matched, and the one expected):",
    ]
    # The expected rule's conditions, with what decided them, and the default.
    assert diff[5].strip() == "2. mail [review] no match"
    assert diff[6].strip().startswith("- labels.any:")
    assert diff[-1] == "  --  default [block] (no rule matched)"
    adhoc = results["ad hoc route"]
    assert not adhoc.passed  # block carries no encryption
    assert adhoc.diff()[2:4] == ["  - encrypt: tls", "  + encrypt: None"]
    assert results["missing sample"].error == "sample nope.txt: No such file or directory"
    assert results["unknown route"].error == "route 'nowhere' is not declared in the policy"
    assert len(report.failed) == 4
    assert str(results["wrong on purpose"].position).endswith("p_test.yaml:7:5")


def test_invalid_case_file_is_located(write_policy: WritePolicy) -> None:
    directory = write_policy(
        {
            "p.yaml": POLICY,
            "p_test.yaml": """\
cases:
  - name: two samples
    route: out
    sender: alice
    text: t
    file: f
    expect: {action: allow, rule: ok}
  - name: bad fields
    route: {direction: up}
    sender: 5
    text: t
    expect: {action: allow, rule: Bad}
""",
        }
    )
    with pytest.raises(PolicyLoadError) as info:
        run_cases(directory)
    messages = [str(e).split("p_test.yaml:")[1] for e in info.value.errors]
    assert messages == [
        "2:5: cases[0]: give the sample as exactly one of 'text' or 'file'",
        "9:24: cases[1].route.direction: expected 'hk->sz' or 'sz->hk', got 'up'",
        "10:13: cases[1].sender: expected a non-empty sender identity without surrounding spaces",
        "12:35: cases[1].expect.rule: expected a rule id of lower-case letters, digits and '_.-'",
    ]


def test_offline_ledger_projects_from_the_sample(write_policy: WritePolicy) -> None:
    policy = run_cases(write_policy({"p.yaml": POLICY, "p_test.yaml": "cases:\n" + _one()})).policy
    summary = scan_bytes_iter(policy, [b"a@example.org b@example.org a@example.org"])
    counts = offline_ledger(policy, summary, {"personal": 5})
    assert (counts["personal"].current, counts["personal"].projected) == (5, 7)


def _one() -> str:
    return (
        "  - {name: n, route: out, sender: alice, text: x,"
        " expect: {action: block, rule: default}}\n"
    )


def test_offline_ledger_adds_nobody_in_an_uncounted_direction(write_policy: WritePolicy) -> None:
    policy = run_cases(write_policy({"p.yaml": POLICY, "p_test.yaml": "cases:\n" + _one()})).policy
    summary = scan_bytes_iter(policy, [b"a@example.org b@example.org"])
    assert offline_ledger(policy, summary, {"personal": 5}, "sz->hk")["personal"].projected == 7
    counts = offline_ledger(policy, summary, {"personal": 5}, "hk->sz")
    assert (counts["personal"].current, counts["personal"].projected) == (5, 5)


# --- the shipped packs' reasons cite instrument and article, and say what is unconfirmed

#: An article-like citation: "Art. 38", "Arts. 29-30", "Art. 5(4)", "s. 33", "ss. 14-17",
#: "Sch. 1 DPP4".
CITATION = re.compile(
    r"\b(?:Arts?\.|ss?\.)\s*\d+(?:\(\d+\))?(?:\s*(?:-|,|and)\s*\d+(?:\(\d+\))?)*|\bDPP\d"
)
#: What REGULATIONS.md itself states, so needs no marker: PIPL Arts. 28-30, 38, 39,
#: 55-56; PDPO DPP1-6 and s. 33.
CONFIRMED = re.compile(
    r"PIPL (?:Art\. (?:28|38|39)|Arts\. (?:28-30|29-30|55-56))$"
    r"|DPP[1-6]$|PDPO \(Cap\. 486\) s\. 33$"
)
INSTRUMENTS = (
    "PIPL",
    "PDPO",
    "2024 Provisions",
    "DSL",
    "GB/T 43697",
    "Cybersecurity Law",
    "HGR Regulations",
    "State Secrets",
    "Official Secrets Ordinance",
)


def _reasons() -> list[tuple[str, str]]:
    policy = run_cases(SHIPPED).policy
    return [(rule.id, rule.reason) for rule in policy.rules] + [("default", policy.default_reason)]


@pytest.mark.parametrize(("rule", "reason"), _reasons())
def test_shipped_reason_cites_article_and_marks_unconfirmed(rule: str, reason: str) -> None:
    assert any(name in reason for name in INSTRUMENTS), f"{rule}: no instrument"
    citations = list(CITATION.finditer(reason))
    assert citations, f"{rule}: no article"
    for found in citations:
        cited = reason[max(0, found.start() - 19) : found.end()]
        if CONFIRMED.search(cited):
            continue
        assert reason[found.end() :].startswith(" (unconfirmed)"), (
            f"{rule}: {found.group()!r} is not in REGULATIONS.md and lacks '(unconfirmed)'"
        )


def test_a_case_may_expect_the_action_alone_or_the_shadow_rules_too(
    write_policy: WritePolicy,
) -> None:
    directory = write_policy(
        {
            "p.yaml": POLICY + "  - {id: watch, action: block, mode: shadow, reason: w,"
            " when: {labels: {any: [pii.email]}}}\n",
            "p_test.yaml": """\
cases:
  - {name: action alone, route: out, sender: alice, text: "a.b@example.org",
     expect: {action: review}}
  - {name: shadow too, route: out, sender: alice, text: "nothing",
     expect: {action: block, shadow: []}}
  - {name: shadow expected, route: out, sender: alice, text: "nothing",
     expect: {action: block, shadow: [watch]}}
""",
        }
    )
    results = {r.name: r for r in run_cases(directory).results}
    assert results["action alone"].passed
    assert results["action alone"].expected == {"action": "review"}
    assert results["shadow too"].passed
    missing = results["shadow expected"]
    assert not missing.passed
    assert missing.diff()[:2] == ["    action: block", "  - shadow: watch"]
    assert missing.diff()[2] == "  + shadow: none"
