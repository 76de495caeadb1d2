"""Named lists (issue 15): a white list kept in a data file, named in conditions as "@NAME"."""

from __future__ import annotations

import pytest

from gateway.policy import PolicyLoadError, load_policy
from tests.policy.conftest import WritePolicy, make_summary

POLICY = """\
senders:
  lab: {team: genomics, organisation: listed-org}
  other: {team: genomics, organisation: other-org}
routes:
  r: {direction: sz->hk, destination: "https://hk.example/r", encrypt: tls}
lists:
  whitelist: {file: whitelist.txt}
  teams: [genomics, imaging]
rules:
  - id: listed
    action: review
    reason: white-listed
    when: {organisation: ["@whitelist"], team: ["@teams"]}
  - id: rest
    action: block
    reason: not listed
"""


def test_a_condition_names_a_list_from_a_file(write_policy: WritePolicy) -> None:
    directory = write_policy(
        {
            "p.yaml": POLICY,
            "whitelist.txt": "# the white list\nlisted-org\nnot-yet-a-sender  # ok\n",
        }
    )
    policy = load_policy(directory)
    summary = make_summary({})
    assert policy.evaluate(policy.context("r", "lab"), summary).rule == "listed"
    assert policy.evaluate(policy.context("r", "other"), summary).rule == "rest"
    assert directory / "whitelist.txt" in policy.sources  # an edit reloads the policy
    assert policy.content["lists"] == {
        "teams": ["genomics", "imaging"],
        "whitelist": ["listed-org", "not-yet-a-sender"],
    }
    # The list's content is part of the version.
    before = policy.version
    (directory / "whitelist.txt").write_text("listed-org\nother-org\n")
    again = load_policy(directory)
    assert again.version != before
    assert again.evaluate(again.context("r", "other"), summary).rule == "listed"


@pytest.mark.parametrize(
    ("files", "says"),
    [
        (
            {"p.yaml": POLICY.replace('"@whitelist"', '"@whitelst"'), "whitelist.txt": "a\n"},
            "p.yaml:13:27: when.organisation: no list 'whitelst' is declared "
            "(lists: teams, whitelist)",
        ),
        ({"p.yaml": POLICY, "whitelist.txt": "ok-org\nbad org!\n"}, "whitelist.txt:2:1: list"),
        ({"p.yaml": POLICY}, "list file 'whitelist.txt':"),
    ],
)
def test_list_mistakes_are_located(
    write_policy: WritePolicy, files: dict[str, str], says: str
) -> None:
    with pytest.raises(PolicyLoadError) as raised:
        load_policy(write_policy(files))
    errors = [str(e) for e in raised.value.errors]
    assert any(says in e for e in errors), errors


def test_a_local_file_adds_to_a_shipped_category(write_policy: WritePolicy) -> None:
    shipped = """\
categories: {personal: ["pii.*"]}
detectors:
  custom.staff_no: {patterns: ["STF-[0-9]{6}"], personal: false}
senders: {lab: {team: t, organisation: o}}
routes: {r: {direction: hk->sz, destination: "https://sz.example/r", encrypt: tls}}
rules:
  - {id: personal, action: block, reason: personal, when: {categories: {any: [personal]}}}
  - {id: rest, action: allow, reason: fine}
"""
    local = "categories:\n  personal: {add: [custom.staff_no]}\n"
    plain = load_policy(write_policy({"00-base.yaml": shipped}))
    extended = load_policy(write_policy({"00-base.yaml": shipped, "50-local.yaml": local}))
    summary = make_summary({"custom.staff_no": (2, 2)})
    assert plain.evaluate(plain.context("r", "lab"), summary).rule == "rest"
    assert extended.evaluate(extended.context("r", "lab"), summary).rule == "personal"
    assert extended.categories["personal"] == ("pii.*", "custom.staff_no")
    assert extended.version != plain.version
    with pytest.raises(PolicyLoadError) as raised:
        load_policy(
            write_policy(
                {"00-base.yaml": shipped, "50-local.yaml": local.replace("personal", "secret")}
            )
        )
    assert any(
        "50-local.yaml:2:" in str(e) and "no category 'secret' is declared" in str(e)
        for e in raised.value.errors
    )
