"""Loading policy directories: merging, every kind of error with its position, versions, keys."""

from __future__ import annotations

import re
import string
from pathlib import Path

import pyrage
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from gateway.policy import PolicyIOError, PolicyLoadError, load_policy
from gateway.policy.loader import policy_files
from tests.policy.conftest import WritePolicy, make_summary

ROUTES = """\
routes:
  out: {direction: sz->hk, destination: "https://hk.example/in", encrypt: tls}
senders:
  alice: {team: lab, organisation: hku}
"""
LOCATED = re.compile(r"^\S+:\d+:\d+: \S")


def at(path: Path, needle: str, nth: int = 0) -> str:
    """``file:line:col`` of the ``nth`` occurrence of ``needle`` in the file (1-based)."""
    text = path.read_text(encoding="utf-8")
    offset = -1
    for _ in range(nth + 1):
        offset = text.index(needle, offset + 1)
    line = text.count("\n", 0, offset) + 1
    col = offset - (text.rfind("\n", 0, offset) + 1) + 1
    return f"{path}:{line}:{col}"


def errors_of(path: Path, **kw: bool) -> list[str]:
    with pytest.raises(PolicyLoadError) as info:
        load_policy(path, **kw)
    messages = [str(e) for e in info.value.errors]
    assert all(LOCATED.match(m) for m in messages), messages
    return messages


def test_files_merge_in_name_order(write_policy: WritePolicy) -> None:
    directory = write_policy(
        {
            "20-later.yaml": "rules:\n  - {id: c, action: allow, reason: c}\n",
            "10-first.yaml": ROUTES
            + "rules:\n  - {id: a, action: block, reason: a, when: {route: out}}\n"
            + "  - {id: b, action: review, reason: b, when: {direction: hk->sz}}\n",
            "10-first_test.yaml": "not: [a, policy",
            ".hidden.yaml": "broken: [",
            "notes.txt": "ignored",
        }
    )
    assert [p.name for p in policy_files(directory)] == ["10-first.yaml", "20-later.yaml"]
    policy = load_policy(directory)
    assert [r.id for r in policy.rules] == ["a", "b", "c"]
    assert policy.name == directory.name
    assert policy.default_action == "block"
    assert policy.sources == tuple(policy_files(directory))


def test_single_file_and_io_errors(write_policy: WritePolicy, tmp_path: Path) -> None:
    directory = write_policy({"only.yaml": ROUTES + "name: solo\n"})
    assert load_policy(directory / "only.yaml").name == "solo"
    with pytest.raises(PolicyIOError, match="no such policy file or directory"):
        load_policy(tmp_path / "missing")
    with pytest.raises(PolicyIOError, match=r"no \*\.yaml policy files"):
        load_policy(write_policy({"readme.md": "x"}))


def test_empty_file_is_an_empty_policy_and_non_mapping_is_an_error(
    write_policy: WritePolicy,
) -> None:
    assert load_policy(write_policy({"a.yaml": "# nothing yet\n"})).rules == ()
    (message,) = errors_of(write_policy({"a.yaml": "- just\n- a list\n"}))
    assert message.endswith("a.yaml:1:1: expected a mapping at the top level, got a list")


def test_every_schema_error_names_file_line_column_and_expectation(
    write_policy: WritePolicy,
) -> None:
    directory = write_policy(
        {
            "p.yaml": """\
                routes:
                  out:
                    direction: sideways
                    destination: https://h/
                    encrypt: tls
                    colour: red
                rules:
                  - id: r1
                    action: allow
                    reason: 5
                    when: {labels: {any: ["pii.[a-z]"]}, size: lots}
                  - action: block
                    reason: no id
                  - id: r3
                    action: block
                    reason: r
                    when: {unscannable: maybe, legal_basis: [handshake]}
                """
        }
    )
    messages = errors_of(directory)
    p = directory / "p.yaml"
    quoted_glob = '"pii.[a-z]'  # the error points at the opening quote
    assert messages == [
        f"{at(p, 'sideways')}: routes.out.direction: expected 'hk->sz' or 'sz->hk', got 'sideways'",
        f"{at(p, 'colour')}: routes.out.colour: unknown key 'colour' "
        "(expected one of: direction, destination, recipient, legal_basis, encrypt, chance, park, "
        "recipient_gba_registered)",
        f"{at(p, '5' + chr(10))}: rules[0].reason: expected a non-empty reason "
        "(it is returned to the sender)",
        f"{at(p, quoted_glob)}: rules[0].when.labels.any[0]: bad glob 'pii.[a-z]': only '*' "
        "and '?' are wildcards ('[]' not allowed)",
        f"{at(p, 'lots')}: rules[0].when.size: expected a comparison such as '> 100 MiB', "
        "got 'lots'",
        f"{at(p, 'action: block')}: rules[1].id: missing required key 'id'",
        f"{at(p, 'maybe')}: rules[2].when.unscannable: expected true or false, got text",
        f"{at(p, '[handshake]')}: rules[2].when.legal_basis: unknown legal basis 'handshake'; "
        "expected one of ('gba-standard-contract', 'cac-standard-contract', 'pi-certification', "
        "'cac-security-assessment', 'pcpd-model-clauses', 'none')",
    ]


def test_whole_set_errors(write_policy: WritePolicy) -> None:
    directory = write_policy(
        {
            "a.yaml": ROUTES
            + """\
categories:
  personal: ["pii.*", pii.passport]
detectors:
  custom.project: {keywords: [Falcon]}
rules:
  - {id: r1, action: block, reason: r, when: {labels: {any: [custom.project, custom.other]}}}
  - {id: r2, action: block, reason: r, when: {categories: {any: [secret]}, route: elsewhere}}
  - {id: r3, action: block, reason: r, when: {ledger: {important: {current: "> 1"}}}}
  - {id: r4, action: block, reason: r, when: {organisation: hku, team: labs}}
""",
            "b.yaml": """\
categories:
  personal: ["pii.*"]
rules:
  - {id: r1, action: allow, reason: catch all, mode: enforce}
  - {id: r5, action: allow, reason: never, encrypt: envelope}
default: {action: block, reason: d}
""",
            "c.yaml": "default: {action: allow, reason: again}\n",
        }
    )
    a, b, c = (directory / n for n in ("a.yaml", "b.yaml", "c.yaml"))
    assert errors_of(directory) == [
        f"{at(a, 'pii.passport')}: categories.personal: unknown label 'pii.passport' "
        "(did you mean 'pii.hk_passport'?): matches no built-in label (SPEC §3.1) and no "
        "declared custom detector",
        f"{at(a, 'custom.other')}: when.labels.any: unknown label 'custom.other': matches no "
        "built-in label (SPEC §3.1) and no declared custom detector",
        f"{at(a, 'secret')}: when.categories.any: unknown category 'secret' (declared: personal)",
        f"{at(a, 'elsewhere')}: when.route: 'elsewhere' is not a declared route (declared: out)",
        f"{at(a, 'important')}: when.ledger: the ledger counts only personal, sensitive, "
        "not 'important'",
        f"{at(a, 'labs')}: when.team: 'labs' is not a declared team (declared: lab)",
        f"{at(b, 'personal')}: category 'personal' is already defined at {at(a, 'personal')}",
        f"{at(b, 'r1')}: duplicate rule id 'r1' (first at {at(a, 'r1')})",
        f"{at(b, 'r5')}: rule 'r5' is unreachable: rule 'r1' at {at(b, 'r1')} matches every "
        "transfer before it",
        f"{at(b, 'envelope')}: rule 'r5' requires encrypt: envelope but route(s) out have no "
        "recipient key",
        f"{at(c, 'default')}: 'default' is already set at {at(b, 'default')}",
    ]


def test_shadow_catch_all_does_not_make_later_rules_unreachable(write_policy: WritePolicy) -> None:
    directory = write_policy(
        {
            "a.yaml": ROUTES
            + "rules:\n  - {id: watch, action: review, reason: w, mode: shadow}\n"
            + "  - {id: all, action: allow, reason: a, when: {route: '*'}}\n"
            + "  - {id: late, action: block, reason: l}\n"
        }
    )
    (message,) = errors_of(directory)
    assert "rule 'late' is unreachable: rule 'all'" in message


def test_route_without_recipient_must_say_tls(write_policy: WritePolicy) -> None:
    directory = write_policy(
        {"a.yaml": "routes:\n  r: {direction: hk->sz, destination: 'https://h/'}\n"}
    )
    (message,) = errors_of(directory)
    assert ":2:3: route 'r' encrypts with 'envelope' by default but has no recipient" in message


def test_recipient_file_resolution(write_policy: WritePolicy) -> None:
    key = str(pyrage.x25519.Identity.generate().to_public())
    route = "routes:\n  r: {direction: hk->sz, destination: 'https://h/', recipient: {file: %s}}\n"
    directory = write_policy({"a.yaml": route % "../keys/r.pub"})
    # Missing key file: an error for the server, a warning for check/test.
    (message,) = errors_of(directory)
    assert "recipient file '../keys/r.pub' does not exist" in message
    lenient = load_policy(directory, require_keys=False)
    assert lenient.routes["r"].recipient is None
    assert [w.warning for w in lenient.warnings] == [True]
    keys = directory.parent / "keys"
    keys.mkdir()
    (keys / "r.pub").write_text(f"# created by make run\n# public key\n{key}\n")
    policy = load_policy(directory)
    assert policy.routes["r"].recipient == key
    assert (keys / "r.pub").resolve() in policy.sources
    # The key is part of the version: a new key is a new policy version.
    other = str(pyrage.x25519.Identity.generate().to_public())
    (keys / "r.pub").write_text(other + "\n")
    assert load_policy(directory).version != policy.version
    (keys / "r.pub").write_text(str(pyrage.x25519.Identity.generate()) + "\n")
    (message,) = errors_of(directory)
    assert "this is an age secret key" in message
    (keys / "r.pub").write_text(f"{key}\n{other}\n")
    (message,) = errors_of(directory)
    assert "expected exactly one age1… line" in message


def test_version_ignores_formatting_comments_and_file_split(write_policy: WritePolicy) -> None:
    one = write_policy(
        {"p.yaml": ROUTES + "rules:\n  - {id: a, action: allow, reason: ok, when: {route: out}}\n"}
    )
    two = write_policy(
        {
            "1.yaml": "# the routes\n" + ROUTES,
            "2.yaml": "rules:\n  - id: a\n    when:\n      route: [out]\n    reason: >\n      ok\n"
            "    action: allow\n",
        }
    )
    changed = write_policy(
        {"p.yaml": ROUTES + "rules:\n  - {id: a, action: allow, reason: OK, when: {route: out}}\n"}
    )
    v1, v2, v3 = (load_policy(d).version for d in (one, two, changed))
    assert v1 == v2
    assert v1 != v3
    assert re.fullmatch("[0-9a-f]{64}", v1)


def test_custom_detectors_compile_and_report_bad_patterns(write_policy: WritePolicy) -> None:
    directory = write_policy(
        {
            "a.yaml": ROUTES
            + """\
detectors:
  custom.project_code:
    patterns: ['PRJ-[0-9]{6}']
    hotwords: [project]
    window: 64
categories:
  confidential: ["custom.*"]
rules:
  - {id: r, action: block, reason: r, when: {categories: {any: [confidential]}}}
"""
        }
    )
    from gateway.policy.cases import scan_bytes_iter

    policy = load_policy(directory)
    summary = scan_bytes_iter(policy, [b"our project PRJ-123456 plan"])
    assert summary.count("custom.project_code") == 1
    decision = policy.evaluate(policy.context("out", "alice"), summary)
    assert decision.rule == "r"
    broken = write_policy(
        {"a.yaml": "detectors:\n  custom.x:\n    patterns: ['ok', '(unclosed']\n"}
    )
    (message,) = errors_of(broken)
    assert re.search(
        r"a\.yaml:3:22: detector custom\.x: patterns\[1\]: invalid expression", message
    )
    both = write_policy({"a.yaml": "detectors:\n  custom.x: {patterns: [a], keywords: [b]}\n"})
    (message,) = errors_of(both)
    assert "exactly one" in message


def test_evaluation_of_a_loaded_policy_uses_declared_categories(write_policy: WritePolicy) -> None:
    directory = write_policy(
        {
            "a.yaml": ROUTES
            + "categories: {personal: 'pii.*'}\n"
            + "rules:\n  - {id: p, action: review, reason: p,"
            + " when: {categories: {any: [personal]}}}\n"
        }
    )
    policy = load_policy(directory)
    ctx = policy.context("out", "alice")
    assert policy.evaluate(ctx, make_summary({"pii.hk_id": (1, 1)})).rule == "p"
    assert policy.evaluate(ctx, make_summary({"org.cn_uscc": (1, 1)})).rule == "default"


# --- fuzzing: arbitrary YAML never raises anything but PolicyLoadError with locations

_KEYS = [
    "name", "categories", "detectors", "senders", "routes", "rules", "default", "id", "action",
    "reason", "when", "encrypt", "mode", "labels", "any", "all", "none", "count", "ledger",
    "personal", "direction", "destination", "recipient", "legal_basis", "file", "patterns",
    "subjects", "size", "route", "team", "organisation", "unscannable", "content_type",
]  # fmt: skip
_SCALARS = st.one_of(
    st.sampled_from(
        [
            "allow",
            "block",
            "review",
            "hk->sz",
            "sz->hk",
            "pii.*",
            ">= 5",
            "> 1 GiB",
            "envelope",
            "https://h/",
            "age1",
            "custom.x",
            "shadow",
            "none",
            "gba-standard-contract",
            "*",
        ]
    ),
    st.text(max_size=8),
    st.integers(),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False),
)
_DATA = st.recursive(
    _SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.sampled_from(_KEYS) | st.text(max_size=5), children, max_size=5),
    ),
    max_leaves=30,
)


def _assert_only_located_errors(directory: Path, text: str) -> None:
    (directory / "fuzz.yaml").write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_policy(directory, require_keys=False)
    except PolicyLoadError as exc:
        for issue in exc.errors:
            assert LOCATED.match(str(issue)), str(issue)


@given(data=st.dictionaries(st.sampled_from(_KEYS), _DATA, max_size=6))
def test_fuzz_structured_yaml(tmp_path_factory: pytest.TempPathFactory, data: object) -> None:
    directory = tmp_path_factory.mktemp("fuzz", numbered=True)
    _assert_only_located_errors(directory, yaml.safe_dump(data, allow_unicode=True))


@given(
    text=st.text(
        alphabet=st.sampled_from([*string.printable, "&", "*", "!", "|", ">", "é", "机"]),
        max_size=200,
    )
)
def test_fuzz_raw_text(tmp_path_factory: pytest.TempPathFactory, text: str) -> None:
    directory = tmp_path_factory.mktemp("fuzz", numbered=True)
    _assert_only_located_errors(directory, text)


def test_ledger_directions_section(write_policy: WritePolicy) -> None:
    base = "categories: {personal: ['pii.*']}\n"
    implicit = load_policy(write_policy({"a.yaml": base}))
    explicit = load_policy(
        write_policy({"a.yaml": base, "b.yaml": "ledger: {directions: sz->hk}\n"})
    )
    both = load_policy(
        write_policy({"a.yaml": base, "b.yaml": "ledger: {directions: [hk->sz, sz->hk]}\n"})
    )
    assert implicit.ledger_directions == explicit.ledger_directions == {"sz->hk"}
    assert both.ledger_directions == {"sz->hk", "hk->sz"}
    # Writing the default out is no change of meaning; counting imports is.
    assert implicit.version == explicit.version != both.version
    twice = write_policy(
        {"a.yaml": "ledger: {directions: [sz->hk]}\n", "b.yaml": "ledger:\n  directions: hk->sz\n"}
    )
    with pytest.raises(PolicyLoadError) as info:
        load_policy(twice)
    [error] = info.value.errors
    assert (
        str(error) == f"{twice / 'b.yaml'}:1:1: 'ledger' is already set at {twice / 'a.yaml'}:1:1"
    )
    bad = write_policy({"a.yaml": "ledger:\n  directions: [sz->hk, up]\n"})
    with pytest.raises(PolicyLoadError) as info:
        load_policy(bad)
    [error] = info.value.errors
    assert str(error).endswith(
        "a.yaml:2:24: ledger.directions[1]: expected 'hk->sz' or 'sz->hk', got 'up'"
    )


# --- content attribute conditions (`attributes: {organism: {any/all/none: [...]}}`)

ATTRIBUTE_RULE = (
    ROUTES
    + """\
rules:
  - id: hgr
    action: block
    reason: r
    when:
      labels: {any: [sensitive.genetic]}
      attributes:
        organism: {any: [Homo sapiens, unknown, other]}
        assembly: {none: ["GRCm*"]}
"""
)


def test_attribute_condition_loads_and_is_part_of_the_version(write_policy: WritePolicy) -> None:
    policy = load_policy(write_policy({"p.yaml": ATTRIBUTE_RULE}))
    (rule,) = policy.rules
    assert not rule.catch_all
    (trace,) = policy.evaluate(policy.context("out", "alice"), make_summary()).trace
    assert [c.condition for c in trace.conditions] == [
        "labels.any",
        "attributes.organism.any",
        "attributes.assembly.none",
    ]
    # Flow style and a scalar for a one-element list mean the same: same version.
    same = ATTRIBUTE_RULE.replace(
        "        organism: {any: [Homo sapiens, unknown, other]}\n"
        '        assembly: {none: ["GRCm*"]}\n',
        "        assembly:\n          none: GRCm*\n"
        "        organism: {any: [Homo sapiens, unknown, other]}\n",
    )
    assert load_policy(write_policy({"p.yaml": same})).version == policy.version
    fewer = ATTRIBUTE_RULE.replace(", other]", "]")
    assert load_policy(write_policy({"p.yaml": fewer})).version != policy.version
    without = ATTRIBUTE_RULE.split("      attributes:")[0]
    assert load_policy(write_policy({"p.yaml": without})).version != policy.version


def test_attribute_condition_errors_are_located(write_policy: WritePolicy) -> None:
    directory = write_policy(
        {
            "p.yaml": ROUTES
            + """\
rules:
  - id: r1
    action: block
    reason: r
    when:
      attributes:
        organsim: {any: [Homo sapiens]}
        organism: {none: [Homo Sapiens, E. coli, "Mycobacterium*"], all: ["*virus*"]}
        assembly: {any: [hg38]}
  - id: r2
    action: block
    reason: r
    when:
      attributes: {organism: {}}
  - id: r3
    action: block
    reason: r
    when:
      attributes: {organism: {some: [x]}, assembly: {any: ["GRCh[38]"]}}
  - id: r4
    action: block
    reason: r
    when:
      attributes: {}
"""
        }
    )
    p = directory / "p.yaml"
    quoted_glob = '"GRCh[38]'  # the errors point at the opening quote
    quoted_virus = '"*virus*'
    messages = errors_of(directory)
    # Schema errors come first (the whole-set checks need a valid file).
    assert messages == [
        f"{at(p, '{}}')}: rules[1].when.attributes.organism: give 'any', 'all' and/or 'none', "
        "e.g. any: [Homo sapiens, unknown]",
        f"{at(p, 'some')}: rules[2].when.attributes.organism.some: unknown key 'some' "
        "(expected one of: any, all, none)",
        f"{at(p, quoted_glob)}: rules[2].when.attributes.assembly.any[0]: bad glob 'GRCh[38]': "
        "only '*' and '?' are wildcards ('[]' not allowed)",
        f"{at(p, '{}', 1)}: rules[3].when.attributes: an empty mapping matches everything; "
        "remove the key instead",
    ]
    text = p.read_text().split("  - id: r2")[0]
    p.write_text(text)
    messages = errors_of(directory)
    known_assemblies = (
        "ASM584v2, ASM985889v3, BDGP6, GRCh37, GRCh38, GRCm38, GRCm39, GRCz11, NCBI36, R64, "
        "T2T-CHM13, TAIR10, WBcel235, mRatBN7.2, unknown"
    )
    assert messages[0] == (
        f"{at(p, 'organsim')}: when.attributes: unknown attribute 'organsim' "
        "(known: assembly, organism)"
    )
    assert messages[1].startswith(
        f"{at(p, 'Homo Sapiens')}: when.attributes.organism.none: value 'Homo Sapiens' matches "
        "no organism the classifier reports (did you mean 'Homo sapiens'?) (known: "
    )
    assert "Escherichia coli, Gallus gallus, Homo sapiens" in messages[1]
    assert messages[2].startswith(
        f"{at(p, 'E. coli')}: when.attributes.organism.none: value 'E. coli' matches no organism"
    )
    assert messages[3].startswith(
        f"{at(p, quoted_virus)}: when.attributes.organism.all: glob '*virus*' matches no organism"
    )
    assert messages[4] == (
        f"{at(p, 'hg38')}: when.attributes.assembly.any: value 'hg38' matches no assembly the "
        f"classifier reports (known: {known_assemblies})"
    )
    assert len(messages) == 5  # "Mycobacterium*" names a reported organism: fine


def test_attribute_any_star_matches_every_transfer(write_policy: WritePolicy) -> None:
    directory = write_policy(
        {
            "p.yaml": ROUTES
            + "rules:\n"
            + "  - id: all\n    action: allow\n    reason: a\n"
            + "    when: {attributes: {organism: {any: '*'}}}\n"
            + "  - {id: late, action: block, reason: l}\n"
        }
    )
    (message,) = errors_of(directory)
    assert "rule 'late' is unreachable: rule 'all'" in message
    narrower = write_policy(
        {
            "p.yaml": ROUTES
            + "rules:\n"
            + "  - id: some\n    action: allow\n    reason: a\n"
            + "    when: {attributes: {organism: {any: '*', none: [unknown]}}}\n"
            + "  - {id: late, action: block, reason: l}\n"
        }
    )
    assert [r.id for r in load_policy(narrower).rules] == ["some", "late"]


def test_docs_list_exactly_the_attribute_values_policies_accept() -> None:
    """docs/policies.md 3.4 is what officers read: its table must be the vocabulary."""
    from gateway.classify.attributes import VOCABULARY

    docs = (Path(__file__).resolve().parents[2] / "docs" / "policies.md").read_text()
    for key, values in VOCABULARY.items():
        (row,) = [line for line in docs.splitlines() if line.startswith(f"| `{key}` |")]
        listed = set(re.findall(r"`([^`]+)`", row.split("|")[2]))
        assert listed == set(values), key


def test_a_misspelt_key_or_label_gets_the_nearest_suggestion(write_policy: WritePolicy) -> None:
    directory = write_policy(
        {"p.yaml": "routes:\n  out: {direction: sz->hk, destinaton: 'https://h/', encrypt: tls}\n"}
    )
    with pytest.raises(PolicyLoadError) as raised:
        load_policy(directory)
    errors = [str(e) for e in raised.value.errors]
    assert any("unknown key 'destinaton' (did you mean 'destination'?)" in e for e in errors)
    directory = write_policy(
        {
            "p.yaml": "rules:\n  - {id: r, action: block, reason: x, "
            "when: {labels: {any: [pii.cn_phon]}}}\n"
        }
    )
    with pytest.raises(PolicyLoadError) as raised:
        load_policy(directory)
    errors = [str(e) for e in raised.value.errors]
    assert any("unknown label 'pii.cn_phon' (did you mean 'pii.cn_phone'?)" in e for e in errors)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (
            "rules:\n  - id: r\n    action: block\n    reason: x\n"
            "    when:\n      subjects: >= 100\n",
            "p.yaml:6:18: YAML syntax error: did not find expected comment or line break "
            '(hint: quote comparisons, e.g. subjects: ">= 100")',
        ),
        (
            "rules:\n\t- id: r\n",
            "p.yaml:2:1: YAML syntax error: found character that cannot start any token "
            "(hint: a tab in the indentation; YAML indents with spaces only)",
        ),
        (
            "rules:\n  - {id: r, action: block, reason: x, when: {subjects: '>= 10,00'}}\n",
            "rules[0].when.subjects: ambiguous number '10,00': separate thousands in groups "
            "of three (10,000 or 100_000), or write the digits alone",
        ),
    ],
)
def test_yaml_mistakes_come_with_a_hint(write_policy: WritePolicy, text: str, says: str) -> None:
    with pytest.raises(PolicyLoadError) as raised:
        load_policy(write_policy({"p.yaml": text}))
    (error,) = [str(e) for e in raised.value.errors]
    assert error.endswith(says), error


def test_grouped_numbers_read_as_written(write_policy: WritePolicy) -> None:
    policy = load_policy(
        write_policy(
            {
                "p.yaml": "rules:\n  - {id: r, action: block, reason: x, "
                "when: {subjects: '>= 100,000', size: '> 1_000 MB'}}\n"
            }
        )
    )
    assert policy.rules[0].predicates  # loaded: 100,000 and 1_000 are unambiguous


@pytest.mark.parametrize(
    "when",
    [
        "{labels: {all: [pii.email], none: [pii.email]}}",
        "{labels: {any: [pii.email], none: [pii.email]}}",
        "{categories: {all: [personal], none: [personal]}}",
    ],
)
def test_a_rule_that_can_never_fire_is_an_error(write_policy: WritePolicy, when: str) -> None:
    directory = write_policy(
        {
            "p.yaml": "categories: {personal: ['pii.*']}\n"
            f"rules:\n  - {{id: never, action: block, reason: x, when: {when}}}\n"
        }
    )
    with pytest.raises(PolicyLoadError) as raised:
        load_policy(directory)
    (error,) = [str(e) for e in raised.value.errors]
    assert "rule 'never' can never fire" in error
    assert "p.yaml:3:" in error


def test_any_of_several_with_one_excluded_can_still_fire(write_policy: WritePolicy) -> None:
    policy = load_policy(
        write_policy(
            {
                "p.yaml": "rules:\n  - {id: some, action: block, reason: x, "
                "when: {labels: {any: [pii.email, pii.cn_phone], none: [pii.email]}}}\n"
            }
        )
    )
    assert [r.id for r in policy.rules] == ["some"]


@pytest.mark.parametrize(
    "value",
    ['!!bool "maybe"', '!!int "ten"', '!!float "x"'],
)
def test_a_tagged_scalar_that_does_not_construct_is_a_located_error(
    write_policy: WritePolicy, value: str
) -> None:
    directory = write_policy(
        {"p.yaml": f"rules:\n  - {{id: x, action: block, reason: r, mode: {value}}}\n"}
    )
    messages = errors_of(directory)
    assert any(m.endswith("malformed scalar value") and ":2:" in m for m in messages), messages
