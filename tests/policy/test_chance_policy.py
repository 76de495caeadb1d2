"""Column profiles in the policy (issue 14): the ``chance`` section, ``chance: count`` on routes.

The samples are real scans: an assay table whose sample IDs and barcodes are
random digits (chance-level Mainland phone, HK phone and card hits), and a
sensor table whose header a policy names with its own words.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from gateway.classify import labels as L
from gateway.classify.chance import CHANCE, CHANCE_LABELS, HEADER_WORDS, NAMED
from gateway.classify.engine import Scanner
from gateway.classify.summary import ScanSummary
from gateway.classify.testing import assay_csv
from gateway.cli import main
from gateway.policy import PolicyLoadError, load_policy, run_cases
from gateway.policy.cases import OFFLINE_SECRET, offline_ledger, scan_bytes_iter, scan_path
from gateway.policy.engine import CompiledPolicy
from tests.policy.conftest import WritePolicy

#: Two routes alike but for ``chance: count``; a rule blocking on any personal label.
BASE = """\
categories: {personal: ["pii.*"]}
routes:
  out: {direction: sz->hk, destination: "https://hk.example/in", encrypt: tls}
  strict: {direction: sz->hk, destination: "https://hk.example/strict", encrypt: tls, chance: count}
senders:
  alice: {team: lab, organisation: hku}
rules:
  - {id: block.personal, action: block, reason: personal, when: {categories: {any: [personal]}}}
  - {id: allow.clean, action: allow, reason: clean}
"""
#: The same without the ``chance: count`` route: no chance setting anywhere.
PLAIN = BASE.replace(", chance: count}", "}")

ASSAY_ROWS = 20_000
CHANCE_TESTED = {L.CN_PHONE, L.HK_PHONE, L.BANK_CARD}


def numbers_csv(header: str, seed: int = 7, rows: int = 5000) -> bytes:
    """A two-column table: eleven-digit random numbers under ``header``, and a reading."""
    rng = random.Random(seed)
    body = "".join(f"{rng.randint(10**10, 10**11 - 1)},{rng.randint(0, 99)}\n" for _ in range(rows))
    return f"{header},reading\n{body}".encode()


def at(path: Path, needle: str) -> str:
    """``file:line:col`` of the first occurrence of ``needle`` in the file (1-based)."""
    text = path.read_text(encoding="utf-8")
    offset = text.index(needle)
    line = text.count("\n", 0, offset) + 1
    col = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return f"{path}:{line}:{col}"


def load_errors(directory: Path) -> list[str]:
    with pytest.raises(PolicyLoadError) as info:
        load_policy(directory)
    return [str(e) for e in info.value.errors]


@pytest.fixture(scope="module")
def assay() -> bytes:
    return assay_csv()


def scan(policy: CompiledPolicy, data: bytes, name: str = "assay.csv") -> ScanSummary:
    return scan_bytes_iter(policy, [data], name=name)


# --------------------------------------------------------------------------- loading


def test_chance_section_loads(write_policy: WritePolicy) -> None:
    policy = load_policy(
        write_policy(
            {
                "a.yaml": BASE,
                "b.yaml": """\
                    chance:
                      count: [pii.bank_card, "org.*"]
                      headers:
                        pii.cn_phone: [Subscriber, 用户号码]
                        pii.cn_resident_id: [patient key]
                    """,
            }
        )
    )
    assert policy.routes["out"].chance == "test"
    assert policy.routes["strict"].chance == "count"
    assert set(policy.chance_words) == set(CHANCE_LABELS)
    # The policy's words come after the built-in ones, lower-cased; other labels are as built.
    assert policy.chance_words[L.CN_PHONE] == (*HEADER_WORDS[L.CN_PHONE], "subscriber", "用户号码")
    assert policy.chance_words[L.CN_RESIDENT_ID] == (*HEADER_WORDS[L.CN_RESIDENT_ID], "patient key")
    for label in (L.CN_USCC, L.BANK_CARD, L.HK_PHONE):
        assert policy.chance_words[label] == HEADER_WORDS[label]


def test_no_chance_section_keeps_the_built_in_words(write_policy: WritePolicy) -> None:
    policy = load_policy(write_policy({"a.yaml": PLAIN}))
    assert {r.chance for r in policy.routes.values()} == {"test"}
    assert dict(policy.chance_words) == dict(HEADER_WORDS)


def test_chance_headers_with_an_untested_label_is_located(write_policy: WritePolicy) -> None:
    directory = write_policy(
        {
            "a.yaml": BASE,
            "b.yaml": """\
                chance:
                  headers:
                    pii.cn_phone: [subscriber]
                    pii.email: [mailbox]
                """,
        }
    )
    b = directory / "b.yaml"
    assert load_errors(directory) == [
        f"{at(b, 'pii.email')}: chance.headers: 'pii.email' is not tested against chance; "
        f"expected one of {', '.join(CHANCE_LABELS)}"
    ]
    assert at(b, "pii.email").endswith("b.yaml:4:5")


def test_chance_set_in_two_files_is_an_error(write_policy: WritePolicy) -> None:
    directory = write_policy(
        {
            "a.yaml": BASE + "chance: {count: [pii.bank_card]}\n",
            "b.yaml": "chance:\n  headers: {pii.cn_phone: [subscriber]}\n",
        }
    )
    a, b = directory / "a.yaml", directory / "b.yaml"
    first = at(a, "chance: {")
    assert first.endswith("a.yaml:10:1")
    assert at(b, "chance").endswith("b.yaml:1:1")
    assert load_errors(directory) == [f"{at(b, 'chance')}: 'chance' is already set at {first}"]


def test_bad_route_chance_mode_and_bad_header_words_are_located(write_policy: WritePolicy) -> None:
    directory = write_policy({"a.yaml": BASE.replace("chance: count", "chance: always")})
    (message,) = load_errors(directory)
    assert message.startswith(f"{at(directory / 'a.yaml', 'always')}: routes.strict.chance: ")
    assert "'test' or 'count'" in message
    short = write_policy({"a.yaml": PLAIN, "b.yaml": "chance:\n  headers: {pii.cn_phone: [x]}\n"})
    (message,) = load_errors(short)
    located = at(short / "b.yaml", "x]")  # a header word is 2 to 64 characters
    assert located.endswith("b.yaml:2:28")
    assert message.startswith(f'{located}: chance.headers["pii.cn_phone"][0]: expected ')


def test_chance_section_is_part_of_the_version(write_policy: WritePolicy) -> None:
    plain = load_policy(write_policy({"a.yaml": PLAIN})).version
    # Loading again, or splitting the same content over files, changes nothing.
    assert load_policy(write_policy({"a.yaml": PLAIN})).version == plain
    counted = load_policy(
        write_policy({"a.yaml": PLAIN, "b.yaml": "chance: {count: [pii.bank_card]}\n"})
    ).version
    worded = load_policy(
        write_policy({"a.yaml": PLAIN, "b.yaml": "chance: {headers: {pii.cn_phone: [sub]}}\n"})
    ).version
    other_word = load_policy(
        write_policy({"a.yaml": PLAIN, "b.yaml": "chance: {headers: {pii.cn_phone: [cell]}}\n"})
    ).version
    block_style = load_policy(
        write_policy(
            {"a.yaml": PLAIN, "b.yaml": "chance:\n  count:\n    - pii.bank_card\n# same\n"}
        )
    ).version
    route_count = load_policy(write_policy({"a.yaml": BASE})).version
    assert len({plain, counted, worded, other_word, route_count}) == 5
    assert block_style == counted
    # The defaults written out are the same policy: the same version.
    spelled = load_policy(
        write_policy({"a.yaml": PLAIN.replace("encrypt: tls}", "encrypt: tls, chance: test}")})
    ).version
    empty = load_policy(write_policy({"a.yaml": PLAIN, "b.yaml": "chance: {}\n"})).version
    assert spelled == empty == plain


def test_chance_count_glob_matching_no_tested_label_is_an_error(
    write_policy: WritePolicy,
) -> None:
    directory = write_policy({"a.yaml": PLAIN, "b.yaml": "chance: {count: [pii.bank_crad]}\n"})
    try:
        load_policy(directory)
    except PolicyLoadError as exc:
        (message,) = (str(e) for e in exc.errors)
        assert message.startswith(f"{at(directory / 'b.yaml', 'pii.bank_crad')}: chance.count")
    else:
        raise AssertionError("loaded a chance.count that matches no label")


# --------------------------------------------------------------------------- with_chance


def test_default_policy_leaves_the_summary_as_scanned(
    write_policy: WritePolicy, assay: bytes
) -> None:
    policy = load_policy(write_policy({"a.yaml": PLAIN}))
    summary = scan(policy, assay)
    assert dict(summary.labels) == {}
    assert summary.subjects == 0
    assert set(summary.chance) == CHANCE_TESTED
    # Around the expected 1556 (7/90 of 20,000), 2000 (1/10) and 18 (8/9000).
    assert 1400 < summary.chance[L.CN_PHONE].count < 1720
    assert 1850 < summary.chance[L.BANK_CARD].count < 2150
    assert 1 <= summary.chance[L.HK_PHONE].count < 45
    assert {(p.header, p.label, p.verdict) for p in summary.columns} == {
        ("sample_id", L.CN_PHONE, CHANCE),
        ("sample_id", L.HK_PHONE, CHANCE),
        ("barcode", L.BANK_CARD, CHANCE),
    }
    route = policy.routes["out"]
    assert policy.with_chance(summary, route) is summary
    decision = policy.evaluate(policy.context("out", "alice"), summary)
    assert (decision.action, decision.rule) == ("allow", "allow.clean")
    assert offline_ledger(policy, summary, {}, "sz->hk")["personal"].projected == 0


def test_route_chance_count_merges_everything_back_and_blocks(
    write_policy: WritePolicy, assay: bytes
) -> None:
    policy = load_policy(write_policy({"a.yaml": BASE}))
    summary = scan(policy, assay)
    assert dict(summary.labels) == {}
    # The default route judges the scan as it is.
    out = policy.with_chance(summary, policy.routes["out"])
    assert out is summary
    assert policy.evaluate(policy.context("out", "alice"), out).rule == "allow.clean"
    # On the `chance: count` route every set-aside finding counts.
    counted = policy.with_chance(summary, policy.routes["strict"])
    assert counted is not summary
    assert set(counted.labels) == CHANCE_TESTED
    for label in CHANCE_TESTED:
        aside = summary.chance[label]
        assert counted.labels[label].count == aside.count
        assert counted.labels[label].distinct == aside.distinct
        assert counted.digests[label] == summary.chance_digests[label]
        assert len(counted.digests[label]) == aside.distinct
    assert dict(counted.chance) == {}
    assert counted.subjects == max(s.distinct for s in summary.chance.values()) > 1000
    assert counted.size == summary.size
    assert counted.sha256 == summary.sha256
    decision = policy.evaluate(policy.context("strict", "alice"), counted)
    assert (decision.action, decision.rule) == ("block", "block.personal")
    ledger = offline_ledger(policy, counted, {}, "sz->hk")
    everyone = frozenset().union(*(summary.chance_digests[label] for label in CHANCE_TESTED))
    assert ledger["personal"].projected == len(everyone) > 1000
    # The scan itself is untouched (frozen summaries).
    assert dict(summary.labels) == {}
    assert set(summary.chance) == CHANCE_TESTED


def test_chance_count_for_one_label_merges_only_that_label(
    write_policy: WritePolicy, assay: bytes
) -> None:
    policy = load_policy(
        write_policy({"a.yaml": PLAIN, "b.yaml": "chance:\n  count: [pii.bank_card]\n"})
    )
    summary = scan(policy, assay)
    assert dict(summary.labels) == {}
    merged = policy.with_chance(summary, policy.routes["out"])
    assert set(merged.labels) == {L.BANK_CARD}
    assert merged.labels[L.BANK_CARD].count == summary.chance[L.BANK_CARD].count
    assert merged.digests[L.BANK_CARD] == summary.chance_digests[L.BANK_CARD]
    assert set(merged.digests) == {L.BANK_CARD}
    assert set(merged.chance) == {L.CN_PHONE, L.HK_PHONE}
    assert merged.chance[L.CN_PHONE] == summary.chance[L.CN_PHONE]
    assert merged.subjects == summary.chance[L.BANK_CARD].distinct
    decision = policy.evaluate(policy.context("out", "alice"), merged)
    assert (decision.action, decision.rule) == ("block", "block.personal")
    ledger = offline_ledger(policy, merged, {}, "sz->hk")
    assert ledger["personal"].projected == len(summary.chance_digests[L.BANK_CARD])


def test_chance_count_globs_pick_labels(write_policy: WritePolicy, assay: bytes) -> None:
    policy = load_policy(
        write_policy({"a.yaml": PLAIN, "b.yaml": "chance: {count: ['*_phone']}\n"})
    )
    summary = scan(policy, assay)
    merged = policy.with_chance(summary, policy.routes["out"])
    assert set(merged.labels) == {L.CN_PHONE, L.HK_PHONE}
    assert set(merged.chance) == {L.BANK_CARD}
    # An empty list is refused, as an empty glob list elsewhere.
    empty = write_policy({"a.yaml": PLAIN, "b.yaml": "chance: {count: []}\n"})
    assert load_errors(empty) == [
        f"{at(empty / 'b.yaml', '[]')}: chance.count: an empty list matches nothing; "
        "remove the key instead"
    ]


def test_real_numbers_under_a_named_header_count_without_any_chance_setting(
    write_policy: WritePolicy,
) -> None:
    policy = load_policy(write_policy({"a.yaml": PLAIN}))
    summary = scan(policy, assay_csv(seed=3, rows=5000, mobile=True))
    assert summary.labels[L.CN_PHONE].count == summary.labels[L.CN_PHONE].distinct == 5000
    assert summary.subjects == 5000
    named = [p for p in summary.columns if p.header == "mobile" and p.label == L.CN_PHONE]
    assert [p.verdict for p in named] == [NAMED]
    # The random columns beside it are still set aside.
    assert L.BANK_CARD not in summary.labels
    assert L.BANK_CARD in summary.chance
    assert policy.evaluate(policy.context("out", "alice"), summary).rule == "block.personal"


# --------------------------------------------------------------------------- header words


HEADERS = "chance:\n  headers:\n    pii.cn_phone: [Subscriber]\n"


def test_policy_header_words_make_a_column_count(write_policy: WritePolicy, tmp_path: Path) -> None:
    plain = load_policy(write_policy({"a.yaml": PLAIN}))
    worded = load_policy(write_policy({"a.yaml": PLAIN, "b.yaml": HEADERS}))
    assert "subscriber" in worded.chance_words[L.CN_PHONE]
    assert "subscriber" not in plain.chance_words[L.CN_PHONE]
    data = numbers_csv("subscriber")
    sample = tmp_path / "meters.csv"
    sample.write_bytes(data)

    # The built-in words do not name the column: chance level, set aside.
    before = scan_path(plain, sample)
    assert L.CN_PHONE not in before.labels
    assert before.chance[L.CN_PHONE].count > 250
    verdicts = {p.label: p.verdict for p in before.columns if p.header == "subscriber"}
    assert verdicts[L.CN_PHONE] == CHANCE
    assert plain.evaluate(plain.context("out", "alice"), before).rule == "allow.clean"

    # The policy's word names it: the column counts, without any `chance: count`.
    after = scan_path(worded, sample)
    assert after.labels[L.CN_PHONE].count == before.chance[L.CN_PHONE].count
    assert L.CN_PHONE not in after.chance
    verdicts = {p.label: p.verdict for p in after.columns if p.header == "subscriber"}
    assert verdicts[L.CN_PHONE] == NAMED
    assert worded.evaluate(worded.context("out", "alice"), after).rule == "block.personal"

    # The scanner the egress builds (the policy's words, any secret) and the
    # bytes scan agree with the file scan.
    scanner = Scanner(worded.detectors, OFFLINE_SECRET, chance_words=worded.chance_words)
    try:
        scanner.scan_name(sample.name)
        scanner.feed(data)
        direct = scanner.finish()
    finally:
        scanner.close()
    assert direct.labels[L.CN_PHONE] == after.labels[L.CN_PHONE]
    assert scan(worded, data, "meters.csv").labels[L.CN_PHONE] == after.labels[L.CN_PHONE]
    # A header the words do not name stays chance level under the same policy.
    other = scan(worded, numbers_csv("meter"), "meters.csv")
    assert L.CN_PHONE not in other.labels
    assert L.CN_PHONE in other.chance


def test_policy_header_word_with_an_underscore_names_the_same_header(
    write_policy: WritePolicy,
) -> None:
    policy = load_policy(
        write_policy(
            {"a.yaml": PLAIN, "b.yaml": "chance:\n  headers:\n    pii.cn_phone: [subscriber_no]\n"}
        )
    )
    summary = scan(policy, numbers_csv("subscriber_no"), "meters.csv")
    assert L.CN_PHONE in summary.labels


# --------------------------------------------------------------------------- cases and explain


def test_policy_test_cases_apply_the_route_setting(write_policy: WritePolicy) -> None:
    directory = write_policy(
        {
            "a.yaml": BASE,
            "a_test.yaml": """\
                cases:
                  - {name: assay on the default route, route: out, sender: alice,
                     file: data/assay.csv, expect: {action: allow, rule: allow.clean}}
                  - {name: assay where chance counts, route: strict, sender: alice,
                     file: data/assay.csv, expect: {action: block, rule: block.personal}}
                  - {name: wrong on purpose, route: strict, sender: alice,
                     file: data/assay.csv, expect: {action: allow, rule: allow.clean}}
                """,
        }
    )
    (directory / "data").mkdir()
    (directory / "data" / "assay.csv").write_bytes(assay_csv(rows=5000))
    report = run_cases(directory)
    results = {r.name: r for r in report.results}
    assert results["assay on the default route"].passed
    assert results["assay where chance counts"].passed
    assert not results["wrong on purpose"].passed
    assert [r.name for r in report.failed] == ["wrong on purpose"]


def run_explain(
    capsys: pytest.CaptureFixture[str], policy: Path, sample: Path, route: str, *extra: str
) -> str:
    argv = ["explain", str(sample), "--route", route, "--sender", "alice"]
    code = main([*argv, "--policy", str(policy), *extra])
    out, _ = capsys.readouterr()
    assert code == 0
    return out


def test_explain_prints_chance_and_column_lines(
    write_policy: WritePolicy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = write_policy({"a.yaml": BASE})
    sample = tmp_path / "assay.csv"
    sample.write_bytes(assay_csv(rows=5000))
    out = run_explain(capsys, directory, sample, "out")
    assert "label:   none found" in out
    chance = [line for line in out.splitlines() if line.startswith("chance:")]
    assert [line.split()[1] for line in chance] == sorted(CHANCE_TESTED)
    assert all(line.endswith("set aside (table columns of random digits)") for line in chance)
    columns = [line for line in out.splitlines() if line.startswith("column:")]
    assert len(columns) == 3
    assert any("'barcode' pii.bank_card:" in line and "at 1/10" in line for line in columns)
    assert "decision: ALLOW by allow.clean" in out

    out = run_explain(capsys, directory, sample, "strict")
    assert "label:   pii.bank_card count " in out
    assert not [line for line in out.splitlines() if line.startswith("chance:")]
    assert "decision: BLOCK by block.personal" in out

    result = json.loads(run_explain(capsys, directory, sample, "out", "--json"))
    assert set(result["summary"]["chance"]) == CHANCE_TESTED
    assert {c["verdict"] for c in result["summary"]["columns"]} == {CHANCE}
    assert result["decision"]["rule"] == "allow.clean"


def test_explain_does_not_say_set_aside_where_chance_counts(
    write_policy: WritePolicy, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = write_policy({"a.yaml": BASE})
    sample = tmp_path / "assay.csv"
    sample.write_bytes(assay_csv(rows=5000))
    out = run_explain(capsys, directory, sample, "strict")
    assert "decision: BLOCK by block.personal" in out
    columns = [line for line in out.splitlines() if line.startswith("column:")]
    assert columns
    assert not [line for line in columns if line.endswith("-> set aside")]
