"""A rule an earlier deciding rule always pre-empts is an error naming both (issue 15).

The analysis (:mod:`gateway.policy.reach`) must be sound: the property test
below evaluates both rules on random transfers and checks that whenever a rule
called shadowed matches, the rule that shadows it matches too.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hypothesis import event, given, settings
from hypothesis import strategies as st

from gateway.cli import main
from gateway.ledger import LedgerCount
from gateway.policy import PolicyLoadError, load_policy
from gateway.policy.engine import TransferContext
from gateway.policy.model import Threshold
from gateway.policy.reach import threshold_implies
from tests.policy.conftest import WritePolicy, make_summary

HEAD = """\
categories:
  personal: ['pii.*']
  contact: [pii.email, pii.cn_phone]
routes:
  out: {direction: sz->hk, destination: "https://hk.example/out", encrypt: tls}
  gba: {direction: sz->hk, destination: "https://hk.example/gba", encrypt: tls,
        legal_basis: gba-standard-contract, park: hk-park}
  back: {direction: hk->sz, destination: "https://sz.example/in", encrypt: tls}
senders:
  alice: {team: lab, organisation: hku}
  bob: {team: lab, organisation: hku}
  carol: {team: clinic, organisation: szu}
"""


def policy_text(*rules: tuple[str, str, object]) -> str:
    lines = [
        f"  - {{id: {rid}, action: {action}, reason: {rid}, when: {json.dumps(when)}}}"
        for rid, action, when in rules
    ]
    return HEAD + "rules:\n" + "\n".join(lines) + "\n"


def shadow_errors(write_policy: WritePolicy, text: str) -> list[str]:
    """The shadowing warnings of a policy (it loads: they are warnings)."""
    directory = write_policy({"p.yaml": text})
    warnings = [str(w) for w in load_policy(directory).warnings]
    assert all(w.split(": ", 1)[1].startswith("warning: ") for w in warnings), warnings
    return warnings


SHADOWED = [
    ({"labels": {"any": ["pii.*"]}}, {"labels": {"all": ["pii.cn_resident_id"]}, "route": "out"}),
    ({"direction": "sz->hk"}, {"route": "out"}),
    ({"direction": "sz->hk"}, {"legal_basis": "gba-standard-contract"}),
    ({"park": "hk-park"}, {"route": "gba", "subjects": ">= 10"}),
    ({"subjects": ">= 100"}, {"subjects": ">= 1000"}),
    ({"subjects": "!= 5"}, {"subjects": "> 5"}),
    ({"size": "> 1 MB"}, {"size": ">= 2 MB", "content_type": "text/csv"}),
    ({"team": "lab"}, {"sender": "alice"}),
    ({"organisation": "hku"}, {"sender": "bob", "direction": "sz->hk"}),
    ({"labels": {"none": ["pii.email"]}}, {"labels": {"none": ["pii.*"]}}),
    ({"labels": {"any": ["pii.email", "pii.cn_phone"]}}, {"labels": {"any": ["pii.email"]}}),
    (
        {"categories": {"any": ["personal"]}, "ledger": {"personal": {"projected": ">= 100000"}}},
        {
            "categories": {"any": ["personal"]},
            "ledger": {"personal": {"projected": ">= 1000000", "current": ">= 1"}},
        },
    ),
    ({"labels": {"count": {"pii.*": ">= 10"}}}, {"labels": {"count": {"pii.*": ">= 20"}}}),
    ({"content_type": "text/*"}, {"content_type": ["text/csv", "text/plain"]}),
    ({"unscannable": True}, {"unscannable": True, "route": "out"}),
]


@pytest.mark.parametrize(("broad", "narrow"), SHADOWED)
def test_a_rule_an_earlier_one_always_pre_empts_is_an_error(
    write_policy: WritePolicy, broad: object, narrow: object
) -> None:
    text = policy_text(("first", "block", broad), ("later", "review", narrow))
    (error,) = shadow_errors(write_policy, text)
    assert "rule 'later' can never decide: rule 'first' at " in error
    assert error.split(": ", 1)[0].endswith("p.yaml:15:10")  # at the later rule's id
    assert "p.yaml:14:10 comes first" in error
    # In the other order both decide something: no error.
    assert (
        shadow_errors(
            write_policy, policy_text(("later", "review", narrow), ("first", "block", broad))
        )
        == []
    )


NOT_SHADOWED = [
    ({"subjects": ">= 1000"}, {"subjects": ">= 100"}),
    ({"subjects": "!= 5"}, {"subjects": ">= 3"}),
    ({"labels": {"all": ["pii.email"]}}, {"labels": {"any": ["pii.email", "pii.cn_phone"]}}),
    ({"labels": {"none": ["pii.*"]}}, {"labels": {"none": ["pii.email"]}}),
    ({"direction": "hk->sz"}, {"route": "out"}),
    ({"route": "out"}, {"direction": "sz->hk"}),
    ({"sender": "alice"}, {"team": "lab"}),
    ({"content_type": "text/*"}, {"content_type": "application/json"}),
    ({"content_type": "text/c*"}, {"content_type": "text/*"}),
    ({"labels": {"any": ["pii.*"]}}, {"categories": {"any": ["personal"]}}),  # not compared
    ({"gba_registered": True}, {"route": "gba"}),
    ({"unscannable": True}, {"unscannable": False}),
]


@pytest.mark.parametrize(("broad", "narrow"), NOT_SHADOWED)
def test_a_rule_with_something_left_to_decide_is_not_flagged(
    write_policy: WritePolicy, broad: object, narrow: object
) -> None:
    text = policy_text(("first", "block", broad), ("later", "review", narrow))
    assert shadow_errors(write_policy, text) == []


def test_only_rules_that_end_the_evaluation_shadow(write_policy: WritePolicy) -> None:
    broad, narrow = {"direction": "sz->hk"}, {"route": "out"}
    text = policy_text(("first", "review", broad), ("later", "block", narrow))
    assert shadow_errors(write_policy, text) != []
    # A shadow-mode rule decides nothing.
    assert (
        shadow_errors(write_policy, text.replace("reason: first,", "reason: first, mode: shadow,"))
        == []
    )
    # A rule with `then` hands the evaluation on.
    with_then = text.replace("reason: first,", "reason: first, then: {without: [pii.email]},")
    assert shadow_errors(write_policy, with_then) == []
    # And the rules after a `then` judge without its labels: no comparison across it.
    across = policy_text(
        ("first", "block", broad),
        ("hand-on", "allow", {"labels": {"any": ["pii.email"]}}),
        ("later", "review", narrow),
    ).replace("reason: hand-on,", "reason: hand-on, then: {without: [pii.email]},")
    assert shadow_errors(write_policy, across) == []


def test_a_rule_for_routes_this_deployment_lacks_is_not_flagged(write_policy: WritePolicy) -> None:
    # A pack's rule for a legal basis no declared route has: it fires nowhere here,
    # and calling it shadowed would be vacuous.
    text = policy_text(
        ("first", "block", {"direction": "sz->hk"}),
        ("later", "review", {"legal_basis": "pcpd-model-clauses"}),
    )
    assert shadow_errors(write_policy, text) == []


def test_the_shipped_packs_have_no_shadowed_rule() -> None:
    policy = load_policy(Path("policies"), require_keys=False)
    assert len(policy.rules) > 10
    assert not [w for w in policy.warnings if "can never decide" in str(w)]


# Soundness: whatever the analysis calls shadowed is shadowed on every transfer.

LABELS = ["pii.email", "pii.cn_phone", "pii.cn_resident_id"]
_label_globs = st.sampled_from([*LABELS, "pii.*", "pii.cn_*"])
_threshold = st.builds(
    lambda op, n: f"{op} {n}",
    st.sampled_from([">=", ">", "<=", "<", "==", "!="]),
    st.integers(0, 6),
)
_presence = st.fixed_dictionaries(
    {},
    optional={
        "any": st.lists(_label_globs, min_size=1, max_size=2),
        "all": st.lists(_label_globs, min_size=1, max_size=2),
        "none": st.lists(_label_globs, min_size=1, max_size=2),
        "count": st.dictionaries(_label_globs, _threshold, min_size=1, max_size=1),
    },
)
_when = st.fixed_dictionaries(
    {},
    optional={
        "route": st.lists(st.sampled_from(["out", "gba", "back", "*"]), min_size=1, max_size=2),
        "direction": st.sampled_from(["sz->hk", "hk->sz"]),
        "park": st.sampled_from(["hk-park", "sz-park"]),
        "sender": st.lists(st.sampled_from(["alice", "bob", "carol"]), min_size=1, max_size=2),
        "team": st.sampled_from(["lab", "clinic"]),
        "labels": _presence,
        "subjects": _threshold,
        "size": _threshold,
    },
)
_transfer = st.tuples(
    st.sampled_from(["out", "gba", "back"]),
    st.sampled_from(["alice", "bob", "carol"]),
    st.dictionaries(st.sampled_from(LABELS), st.integers(1, 6)),
    st.integers(0, 7),
)


def _matches(policy: object, transfer: tuple[str, str, dict[str, int], int]) -> bool:
    route, sender, labels, size = transfer
    summary = make_summary({k: (n, n) for k, n in labels.items()}, size=size)
    context = TransferContext(policy.routes[route], policy.senders[sender])  # type: ignore[attr-defined]
    counts = {c: LedgerCount(0, 0) for c in ("personal",)}
    decision = policy.evaluate(context, summary, counts)  # type: ignore[attr-defined]
    return bool(decision.trace[0].matched)


@settings(max_examples=300, deadline=None)
@given(
    broad=_when,
    other=_when,
    derived=st.booleans(),
    transfers=st.lists(_transfer, min_size=20, max_size=20),
)
def test_what_is_called_shadowed_is_shadowed_on_every_transfer(
    tmp_path_factory: pytest.TempPathFactory,
    broad: dict[str, object],
    other: dict[str, object],
    derived: bool,
    transfers: list[tuple[str, str, dict[str, int], int]],
) -> None:
    # Half the time the later rule is the earlier one with more conditions
    # (where shadowing is common), half the time an unrelated rule.
    narrow = {**other, **broad} if derived else other
    directory = tmp_path_factory.mktemp("p")
    path = directory / "p.yaml"
    path.write_text(policy_text(("first", "block", broad), ("later", "review", narrow)))
    try:
        warnings = load_policy(directory).warnings
    except PolicyLoadError:
        return  # an error (a contradiction, say)
    if not any("can never decide" in str(w) for w in warnings):
        return
    event("called shadowed")
    singles = []
    for rid, when in (("first", broad), ("later", narrow)):
        path.write_text(policy_text((rid, "block", when)))
        singles.append(load_policy(directory))
    first, later = singles
    for transfer in transfers:
        if _matches(later, transfer):
            assert _matches(first, transfer), (broad, narrow, transfer)


@given(
    narrow=st.tuples(st.sampled_from([">=", ">", "<=", "<", "==", "!="]), st.integers(0, 8)),
    broad=st.tuples(st.sampled_from([">=", ">", "<=", "<", "==", "!="]), st.integers(0, 8)),
)
def test_threshold_implication_is_exact_over_the_counts(
    narrow: tuple[str, int], broad: tuple[str, int]
) -> None:
    n, b = (Threshold(op, v, f"{op} {v}") for op, v in (narrow, broad))
    # Counts are whole numbers; beyond 0..20 every op here is constant.
    truth = all(b.test(x) for x in range(-1, 21) if n.test(x))
    assert threshold_implies(n, b) == truth


def test_yaml_of_the_cases_is_what_the_loader_reads() -> None:
    # The parametrized cases go through json.dumps into flow YAML: check one reads back.
    data = yaml.safe_load(policy_text(("a", "block", SHADOWED[0][0])))
    assert data["rules"][0]["when"] == SHADOWED[0][0]


def test_policy_check_warns_and_strict_fails(
    write_policy: WritePolicy, capsys: pytest.CaptureFixture[str]
) -> None:
    text = policy_text(
        ("first", "block", {"direction": "sz->hk"}), ("later", "review", {"route": "out"})
    )
    directory = write_policy({"p.yaml": text})
    assert main(["policy", "check", str(directory)]) == 0
    err = capsys.readouterr().err
    assert "rule 'later' can never decide" in err
    assert main(["policy", "check", "--strict", str(directory)]) == 1
    assert "1 warning (--strict)" in capsys.readouterr().err
    clean = write_policy({"p.yaml": policy_text(("first", "block", {"direction": "sz->hk"}))})
    assert main(["policy", "check", "--strict", str(clean)]) == 0
