"""Rules that do not end the evaluation (``then``) and the destination park (issue 15).

A rule with ``then`` weighs its action against what the later rules decide
for the transfer without its ``then.without`` labels; the stricter decides.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main
from gateway.policy import PolicyLoadError, load_policy
from gateway.policy.engine import CompiledPolicy
from tests.policy.conftest import WritePolicy, make_summary

POLICY = """\
categories:
  personal: ["pii.*"]
  important: [sensitive.genetic, geo.precise_location]
senders:
  lab: {team: genomics, organisation: listed-org}
  other: {team: genomics, organisation: other-org}
routes:
  to-park: {direction: sz->hk, destination: "https://hk.example/a", encrypt: tls, park: hk-park}
  elsewhere: {direction: sz->hk, destination: "https://hk.example/b", encrypt: tls}
rules:
  - id: whitelist-review
    action: review
    reason: white-listed HGR is reviewed
    when:
      park: hk-park
      organisation: [listed-org]
      labels: {any: [sensitive.genetic]}
    then:
      without: [sensitive.genetic]
  - id: hgr-block
    action: block
    reason: HGR leaves only with a filing
    when: {labels: {any: [sensitive.genetic]}}
  - id: important-block
    action: block
    reason: important data needs an assessment
    when: {categories: {any: [important]}}
  - id: many-people-block
    action: block
    reason: over the threshold
    when: {subjects: ">= 1000"}
  - id: personal-review
    action: review
    reason: personal data is reviewed
    when: {categories: {any: [personal]}}
  - id: allow-rest
    action: allow
    reason: research data
"""


@pytest.fixture
def policy(write_policy: WritePolicy) -> CompiledPolicy:
    return load_policy(write_policy({"p.yaml": POLICY}))


def _decide(policy: CompiledPolicy, route: str, sender: str, labels: dict[str, tuple[int, int]]):  # type: ignore[no-untyped-def]
    return policy.evaluate(policy.context(route, sender), make_summary(labels))


def test_the_whitelist_turns_the_block_into_a_review_when_nothing_else_objects(
    policy: CompiledPolicy,
) -> None:
    decision = _decide(policy, "to-park", "lab", {"sensitive.genetic": (3, 3)})
    assert (decision.action, decision.rule) == ("review", "whitelist-review")
    assert decision.combined == ("whitelist-review",)
    decided = [t.rule for t in decision.trace if t.decided]
    assert decided == ["whitelist-review"]
    # The later rules ran without the genetic data: the HGR block did not match.
    by_rule = {t.rule: t for t in decision.trace}
    assert not by_rule["hgr-block"].matched
    assert by_rule["allow-rest"].matched
    assert decision.to_json()["combined"] == ["whitelist-review"]


@pytest.mark.parametrize(
    ("labels", "rule"),
    [
        ({"sensitive.genetic": (3, 3), "geo.precise_location": (2, 2)}, "important-block"),
        ({"sensitive.genetic": (3, 3), "pii.cn_resident_id": (1500, 1500)}, "many-people-block"),
    ],
)
def test_a_stricter_later_rule_wins_over_the_whitelist(
    policy: CompiledPolicy, labels: dict[str, tuple[int, int]], rule: str
) -> None:
    decision = _decide(policy, "to-park", "lab", labels)
    assert (decision.action, decision.rule) == ("block", rule)
    assert decision.encrypt is None
    assert decision.combined == ("whitelist-review",)
    assert [t.rule for t in decision.trace if t.decided] == [rule]


def test_on_a_tie_the_earlier_rule_decides(policy: CompiledPolicy) -> None:
    decision = _decide(policy, "to-park", "lab", {"sensitive.genetic": (3, 3), "pii.email": (2, 2)})
    assert (decision.action, decision.rule) == ("review", "whitelist-review")
    by_rule = {t.rule: t for t in decision.trace}
    assert by_rule["personal-review"].matched
    assert not by_rule["personal-review"].decided


@pytest.mark.parametrize(("route", "sender"), [("elsewhere", "lab"), ("to-park", "other")])
def test_without_the_whitelist_the_hgr_block_stands(
    policy: CompiledPolicy, route: str, sender: str
) -> None:
    decision = _decide(policy, route, sender, {"sensitive.genetic": (3, 3)})
    assert (decision.action, decision.rule) == ("block", "hgr-block")
    assert decision.combined == ()


def test_subjects_of_masked_person_labels_leave_with_them(write_policy: WritePolicy) -> None:
    text = POLICY.replace("without: [sensitive.genetic]", "without: [sensitive.genetic, pii.email]")
    policy = load_policy(write_policy({"p.yaml": text}))
    decision = _decide(
        policy, "to-park", "lab", {"sensitive.genetic": (1, 1), "pii.email": (2000, 2000)}
    )
    # Without the e-mail addresses nobody is left: no threshold, no personal review.
    assert (decision.action, decision.rule) == ("review", "whitelist-review")
    by_rule = {t.rule: t for t in decision.trace}
    assert not by_rule["many-people-block"].matched


def test_an_allow_with_then_loses_to_the_default_block(write_policy: WritePolicy) -> None:
    policy = load_policy(
        write_policy(
            {
                "p.yaml": """\
                senders: {lab: {team: t, organisation: o}}
                routes: {r: {direction: hk->sz, destination: "https://sz.example/r", encrypt: tls}}
                rules:
                  - id: allow-and-go-on
                    action: allow
                    reason: fine so far
                    then: {}
                """
            }
        )
    )
    decision = policy.evaluate(policy.context("r", "lab"), make_summary({}))
    assert (decision.action, decision.rule) == ("block", "default")
    assert decision.combined == ("allow-and-go-on",)


def test_a_catch_all_with_then_leaves_later_rules_reachable(write_policy: WritePolicy) -> None:
    policy = load_policy(
        write_policy(
            {
                "p.yaml": """\
                senders: {lab: {team: t, organisation: o}}
                routes: {r: {direction: hk->sz, destination: "https://sz.example/r", encrypt: tls}}
                rules:
                  - {id: first, action: review, reason: always looked at, then: {}}
                  - {id: second, action: block, reason: personal, when: {labels: {any: ["pii.*"]}}}
                """
            }
        )
    )
    decision = policy.evaluate(policy.context("r", "lab"), make_summary({"pii.email": (1, 1)}))
    assert (decision.action, decision.rule) == ("block", "second")


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (
            "{id: x, action: block, reason: r, then: {without: [pii.email]}}",
            "'then' applies to allow and review",
        ),
        (
            "{id: x, action: review, reason: r, then: {without: [pii.emial]}}",
            "then.without: unknown label 'pii.emial'",
        ),
        ("{id: x, action: allow, reason: r, when: {park: hk}}", "unknown park 'hk'"),
    ],
)
def test_bad_then_and_park_are_located(write_policy: WritePolicy, rule: str, message: str) -> None:
    directory = write_policy(
        {
            "p.yaml": "senders: {lab: {team: t, organisation: o}}\n"
            'routes: {r: {direction: hk->sz, destination: "https://sz.example/r", encrypt: tls}}\n'
            f"rules:\n  - {rule}\n"
        }
    )
    with pytest.raises(PolicyLoadError) as raised:
        load_policy(directory)
    errors = [str(e) for e in raised.value.errors]
    assert any(message in e and "p.yaml:4:" in e for e in errors), errors


def test_park_none_names_routes_outside_both_parks(write_policy: WritePolicy) -> None:
    policy = load_policy(
        write_policy(
            {
                "p.yaml": POLICY.replace(
                    "park: hk-park\n      organisation", "park: [none]\n      organisation"
                )
            }
        )
    )
    assert _decide(policy, "elsewhere", "lab", {"sensitive.genetic": (1, 1)}).rule == (
        "whitelist-review"
    )
    assert _decide(policy, "to-park", "lab", {"sensitive.genetic": (1, 1)}).rule == "hgr-block"


def test_then_and_park_are_part_of_the_version(write_policy: WritePolicy) -> None:
    base = load_policy(write_policy({"p.yaml": POLICY})).version
    no_then = load_policy(
        write_policy(
            {"p.yaml": POLICY.replace("    then:\n      without: [sensitive.genetic]\n", "")}
        )
    ).version
    no_park = load_policy(write_policy({"p.yaml": POLICY.replace(", park: hk-park}", "}")})).version
    assert len({base, no_then, no_park}) == 3


def test_explain_shows_the_weighed_rule_and_the_one_that_decided(
    write_policy: WritePolicy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = write_policy({"p.yaml": POLICY.replace("  lab: {team", "  lab-sender: {team")})
    sample = tmp_path / "genome.fasta"
    sample.write_text(">p1 id=440305198506121237\n" + "ACGT" * 20 + "\n", encoding="utf-8")
    code = main(
        [
            "explain",
            str(sample),
            "--policy",
            str(directory),
            "--route",
            "to-park",
            "--sender",
            "lab-sender",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "park hk-park" in out
    # A tie with personal-review (the later rules saw the identity number): the
    # earlier rule decides, the later one is shown matched but not deciding.
    assert "whitelist-review [review] MATCH -> decides" in out
    assert "personal-review [review] MATCH\n" in out
    assert "hgr-block [block] no match" in out
    assert "decision: REVIEW by whitelist-review" in out
    assert "combined: whitelist-review (then)" in out


def test_explain_marks_a_weighed_rule_that_a_stricter_one_overruled(
    write_policy: WritePolicy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = write_policy({"p.yaml": POLICY.replace("  lab: {team", "  lab-sender: {team")})
    sample = tmp_path / "sites.fasta"
    sample.write_text(">p1 site=22.54321,114.05678\n" + "ACGT" * 20 + "\n", encoding="utf-8")
    argv = ["explain", str(sample), "--policy", str(directory)]
    assert main([*argv, "--route", "to-park", "--sender", "lab-sender"]) == 0
    out = capsys.readouterr().out
    assert "whitelist-review [review] MATCH (then: weighed" in out
    assert "important-block [block] MATCH -> decides" in out
    assert "decision: BLOCK by important-block" in out


def test_a_review_rule_may_ask_for_two_officers(write_policy: WritePolicy) -> None:
    base = (
        "senders: {lab: {team: t, organisation: o}}\n"
        'routes: {r: {direction: hk->sz, destination: "https://sz.example/r", encrypt: tls}}\n'
    )
    policy = load_policy(
        write_policy(
            {"p.yaml": base + "rules:\n  - {id: two, action: review, reason: x, approvals: 2}\n"}
        )
    )
    decision = policy.evaluate(policy.context("r", "lab"), make_summary({}))
    assert (decision.rule, decision.approvals) == ("two", 2)
    for rule, says in (
        (
            "{id: x, action: allow, reason: x, approvals: 2}",
            "'approvals' applies to review rules",
        ),
        ("{id: x, action: review, reason: x, approvals: 3}", "less than or equal to 2"),
    ):
        with pytest.raises(PolicyLoadError) as raised:
            load_policy(write_policy({"p.yaml": base + f"rules:\n  - {rule}\n"}))
        assert any(says in str(e) for e in raised.value.errors), raised.value.errors
