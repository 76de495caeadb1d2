"""Column profiles: numbers that only look like identifiers (issue 14).

Random digits pass our validators at a fixed rate. In a table column of
sample IDs, barcodes or device numbers, about one eleven-digit value in
thirteen reads as a Mainland mobile number and one card-shaped value in ten
passes Luhn. Those hits say nothing about people; a column whose hits come at
a rate random digits cannot explain does.

For every column of a table (CSV/TSV with or without a header, every table a
format reader renders, and a text file of one value per line), the matcher
counts per chance-tested validator (:data:`CHANCE_LABELS`):

- ``candidates``: the values of the validator's length;
- ``shaped``: those with its shape: everything the validator checks except
  what random digits pass by chance (the check character, or a phone
  number's prefix);
- ``valid``: those the validator accepted and that became findings.

Under "the column is random digits" ``valid`` is binomial(``shaped``,
:data:`RATES` [label]). The column's findings are **chance-level** (not
findings: they do not count, are no distinct subjects and do not reach the
ledger; the summary reports them apart) when the column has at least
:data:`MIN_CANDIDATES` candidates, its header does not name the label
(:data:`HEADER_WORDS`), and ``valid`` is consistent with the rate from
*both* sides:

- P(X ≥ valid) ≥ :data:`LEVEL`: no excess. Real identifiers planted among
  random values raise the count above chance and make the whole column count.
- P(X ≤ valid) ≥ :data:`LEVEL`: no deficit. Padding real identifiers with
  values chosen *not* to validate (to pull the rate down to chance) leaves a
  visible deficit of chance hits, and the column counts.

Finally the chance-level columns of one label are tested together: spreading
real identifiers thinly over many columns shows as an excess over all of them,
and then none of them is set aside.

Detection power (the arithmetic, for officers: docs/policies.md). With ``n``
shaped values at rate ``p`` the count's standard deviation is
``sqrt(n·p·(1-p))``; at :data:`LEVEL` = 10⁻³ the column counts once ``valid``
exceeds chance by about 3.1 standard deviations. 100 real Mainland mobile
numbers among 10,000 random eleven-digit values: ``p`` = 7/90, chance gives
778 ± 26.8, the threshold for 10,100 values is 871, and 100 + Bin(10,000,
7/90) reaches it in 61 % of such columns (exact binomial); 128 real numbers
in 89 %, 150 in 98 %. Below that an insider can hide about 3.1 standard
deviations of values per column (≈ 83 in a 10,000-row column, 0.8 %; ≈ 830 in
a 1,000,000-row one, 0.08 %). Against that, a clean column of uniformly
random numbers is taken for personal data with probability ≤ 2·10⁻³ per
label.

Everything here is counts: a profile holds no values.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Final

from gateway.classify import labels as L

#: The validators whose findings in a table column are tested, in the order of
#: the compiled core's ``CH_*`` (its first five native labels).
CHANCE_LABELS: Final = (L.CN_RESIDENT_ID, L.CN_USCC, L.BANK_CARD, L.CN_PHONE, L.HK_PHONE)

#: The probability that a random value of the label's shape validates.
RATES: Final[Mapping[str, Fraction]] = {
    # Shape: 17 digits with a province code and a birth date, then any
    # character. The MOD 11-2 check character is one of 11 ("0"-"9", "X"),
    # uniform over random bodies: 1/11. A random final digit (no "X") is right
    # when the check is a digit (10/11) and the same digit (1/10): 1/11 again.
    L.CN_RESIDENT_ID: Fraction(1, 11),
    # Shape: 18 code characters with the region code digits. GB 32100's check
    # character is one of 31 values: 1/31; a random final digit, likewise
    # (10/31 · 1/10).
    L.CN_USCC: Fraction(1, 31),
    # Shape: 15-19 digits with a known IIN prefix. For any 14-18 leading
    # digits exactly one of the ten last digits passes Luhn: 1/10.
    L.BANK_CARD: Fraction(1, 10),
    # Shape: eleven digits, the first not 0 (a number, not a zero-padded
    # code). A Mainland mobile number is 1[3-9] then nine digits: first digit
    # 1 (1 in 9), second 3-9 (7 in 10): 7/90, one in 12.9.
    L.CN_PHONE: Fraction(7, 90),
    # The same shape read as "852" + an eight-digit number from 2: first
    # digit 8 (1/9), then 5 (1/10), 2 (1/10), then 2-9 (8/10): 8/9000.
    L.HK_PHONE: Fraction(8, 9000),
}

#: Both tails of the test (excess and deficit) are taken at this level.
LEVEL: Final = 1e-3
#: A column with fewer values of a validator's length is not tested: there a
#: single real identifier is "consistent with chance", and it must count.
MIN_CANDIDATES: Final = 100
#: Profiles reported in a summary (``gateway explain``), most findings first.
MAX_REPORTED: Final = 64
#: Header cells are kept this long (for the report).
HEADER_CHARS: Final = 64

#: Header words that name each label: a column under such a header always
#: counts. ASCII words match whole words of the header cell (or the start of
#: one, for words of 5 letters or more: "phoneNumber"); CJK words anywhere.
_WORDS: Final[Mapping[str, tuple[str, ...]]] = {
    L.CN_RESIDENT_ID: (
        "id card",
        "idcard",
        "id no",
        "id number",
        "identity",
        "national id",
        "citizen id",
        "resident id",
        "sfz",
        "sfzh",
        "身份证",
        "身份證",
        "证件",
        "證件",
    ),
    L.CN_USCC: (
        "uscc",
        "credit code",
        "social credit",
        "统一社会信用代码",
        "統一社會信用代碼",
        "信用代码",
        "信用代碼",
        "组织机构代码",
    ),
    L.BANK_CARD: (
        "card",
        "cards",
        "card no",
        "cardno",
        "cardnumber",
        "pan",
        "creditcard",
        "debitcard",
        "account",
        "银行卡",
        "銀行卡",
        "卡号",
        "卡號",
        "信用卡",
        "借记卡",
        "账号",
        "帳號",
    ),
    L.CN_PHONE: (
        "phone",
        "mobile",
        "tel",
        "telephone",
        "msisdn",
        "contact",
        "cellphone",
        "电话",
        "電話",
        "手机",
        "手機",
        "联系",
        "聯絡",
    ),
}
HEADER_WORDS: Final[Mapping[str, tuple[str, ...]]] = {**_WORDS, L.HK_PHONE: _WORDS[L.CN_PHONE]}

# Verdicts: the first sets the findings aside; every other one keeps them.
CHANCE: Final = "chance"
#: Chance-level, but the policy counts them (``chance: count``).
COUNTED: Final = "chance, counted by the policy"
EXCESS: Final = "excess"
DEFICIT: Final = "deficit"
NAMED: Final = "named"
FEW: Final = "few"
EXCESS_OVERALL: Final = "excess over all columns"

_NOT_WORD: Final = re.compile(r"[^0-9a-z\u0080-\U0010ffff]+")


#: What a report shows instead of a header cell that might hold a value.
WITHHELD: Final = "(withheld)"
_VALUE_LIKE: Final = re.compile(r"[0-9]{4}|@|[^\s,;|/_.-]{25}")


def shown_header(header: str) -> str:
    """A header cell as reports show it: withheld when it could hold an identifier
    (four digits in a row, an "@", a token of 25 characters), and at most
    :data:`HEADER_CHARS` long. Reports never show a matched value."""
    if _VALUE_LIKE.search(header):
        return WITHHELD
    return header[:HEADER_CHARS]


def names_label(header: str, words: Iterable[str]) -> bool:
    """Whether a header cell names a label by one of ``words`` (see :data:`HEADER_WORDS`).

    Both are read as words: lower case, split at anything but letters and
    digits and between a lower-case letter and a capital (``phoneNumber``,
    ``phone_number`` and ``Phone Number`` are the same two words).
    """
    text = f" {_words(header)} "
    for word in words:
        if not word.isascii():
            if word in text:
                return True
            continue
        word = _words(word)
        if word and (f" {word} " in text or (len(word) >= 5 and f" {word}" in text)):
            return True
    return False


def _words(text: str) -> str:
    return " ".join(_NOT_WORD.split(_split_camel(text).lower())).strip()


def _split_camel(text: str) -> str:
    return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", text)


# --------------------------------------------------------------------------- binomial tails


def upper_tail(n: int, p: float, x: int) -> float:
    """P(X ≥ x) for X ~ Binomial(n, p), exact (summed in log space)."""
    if x <= 0:
        return 1.0
    if x > n:
        return 0.0
    if x <= n * p:
        return max(0.0, 1.0 - lower_tail(n, p, x - 1))
    return _tail_sum(n, p, x, 1)


def lower_tail(n: int, p: float, x: int) -> float:
    """P(X ≤ x) for X ~ Binomial(n, p), exact (summed in log space)."""
    if x < 0:
        return 0.0
    if x >= n:
        return 1.0
    if x >= n * p:
        return max(0.0, 1.0 - upper_tail(n, p, x + 1))
    return _tail_sum(n, p, x, -1)


def _tail_sum(n: int, p: float, start: int, step: int) -> float:
    """Σ P(X = k) from ``start`` away from the mean (the terms only shrink)."""
    log_p, log_q = math.log(p), math.log1p(-p)
    first = (
        math.lgamma(n + 1)
        - math.lgamma(start + 1)
        - math.lgamma(n - start + 1)
        + start * log_p
        + (n - start) * log_q
    )
    total, term, k = 0.0, 1.0, start
    odds = p / (1.0 - p)
    while term > 1e-17 * total or not total:
        total += term
        if step > 0:
            if k == n:
                break
            term *= (n - k) / (k + 1) * odds
        else:
            if k == 0:
                break
            term *= k / (n - k + 1) / odds
        k += step
        if term == 0.0:
            break
    return min(1.0, math.exp(first) * total)


# --------------------------------------------------------------------------- the test


@dataclass(frozen=True, slots=True)
class ColumnProfile:
    """One column's counts for one validator and the test's numbers.

    Attributes:
        table: the table's number in the scan (0 for the first table member).
        column: the column's number (0 for the first).
        header: the column's header cell ("" when the table has no header).
        label: the validator's label.
        candidates: values of the validator's length.
        shaped: values of its shape (all but what random digits pass by chance).
        valid: findings.
        rate: the chance rate (:data:`RATES`).
        p_excess: P(X ≥ valid) under chance.
        p_deficit: P(X ≤ valid) under chance.
        verdict: :data:`CHANCE` (set aside) or why the findings count.
    """

    table: int
    column: int
    header: str
    label: str
    candidates: int
    shaped: int
    valid: int
    rate: Fraction
    p_excess: float
    p_deficit: float
    verdict: str

    @property
    def expected(self) -> float:
        """Findings random digits would give: shaped × rate."""
        return self.shaped * float(self.rate)

    def to_json(self) -> dict[str, object]:
        """The profile as ``gateway explain`` and the scan JSON show it."""
        return {
            "table": self.table,
            "column": self.column,
            "header": self.header,
            "label": self.label,
            "candidates": self.candidates,
            "shaped": self.shaped,
            "valid": self.valid,
            "rate": f"{self.rate.numerator}/{self.rate.denominator}",
            "expected": round(self.expected, 2),
            "p_excess": float(f"{self.p_excess:.3g}"),
            "p_deficit": float(f"{self.p_deficit:.3g}"),
            "verdict": self.verdict,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, object]) -> ColumnProfile:
        """The inverse of :meth:`to_json`."""
        num, _, den = str(obj["rate"]).partition("/")
        return cls(
            table=int(str(obj["table"])),
            column=int(str(obj["column"])),
            header=str(obj["header"]),
            label=str(obj["label"]),
            candidates=int(str(obj["candidates"])),
            shaped=int(str(obj["shaped"])),
            valid=int(str(obj["valid"])),
            rate=Fraction(int(num), int(den or 1)),
            p_excess=float(str(obj["p_excess"])),
            p_deficit=float(str(obj["p_deficit"])),
            verdict=str(obj["verdict"]),
        )


#: One column's raw counts as the matcher keeps them: (source, table, column,
#: ((candidates, shaped, valid) per label of CHANCE_LABELS)).
RawProfile = tuple[int, int, int, Sequence[tuple[int, int, int]]]


@dataclass(frozen=True, slots=True)
class Decision:
    """A column profile and where its findings are counted (``source``, ``ch``: the core's)."""

    source: int
    ch: int
    profile: ColumnProfile

    @property
    def aside(self) -> bool:
        """Whether the column's findings are chance-level."""
        return self.profile.verdict == CHANCE


def decide(
    raw: Iterable[RawProfile],
    headers: Sequence[Sequence[str]],
    words: Mapping[str, Iterable[str]] = HEADER_WORDS,
) -> list[Decision]:
    """The verdict for every column and validator with findings.

    Args:
        raw: the matcher's profiles.
        headers: per table, its header cells (empty when it has none).
        words: the header words that name each label.
    """
    decisions: list[Decision] = []
    for source, table, column, counts in raw:
        cells = headers[table] if 0 <= table < len(headers) else ()
        header = cells[column] if column < len(cells) else ""
        for ch, (candidates, shaped, valid) in enumerate(counts):
            if not valid:
                continue
            label = CHANCE_LABELS[ch]
            rate = RATES[label]
            p = float(rate)
            n = max(shaped, valid)
            p_excess = upper_tail(n, p, valid)
            p_deficit = lower_tail(n, p, valid)
            if names_label(header, words.get(label, ())):
                verdict = NAMED
            elif candidates < MIN_CANDIDATES:
                verdict = FEW
            elif p_excess < LEVEL:
                verdict = EXCESS
            elif p_deficit < LEVEL:
                verdict = DEFICIT
            else:
                verdict = CHANCE
            profile = ColumnProfile(
                table=table,
                column=column,
                header=shown_header(header),
                label=label,
                candidates=candidates,
                shaped=shaped,
                valid=valid,
                rate=rate,
                p_excess=p_excess,
                p_deficit=p_deficit,
                verdict=verdict,
            )
            decisions.append(Decision(source, ch, profile))
    return _overall(decisions)


def _overall(decisions: list[Decision]) -> list[Decision]:
    """Keep every chance-level column of a label whose columns together show an excess."""
    totals: dict[str, tuple[int, int]] = {}
    for d in decisions:
        if d.aside:
            shaped, valid = totals.get(d.profile.label, (0, 0))
            totals[d.profile.label] = (shaped + d.profile.shaped, valid + d.profile.valid)
    excess = {
        label
        for label, (shaped, valid) in totals.items()
        if upper_tail(max(shaped, valid), float(RATES[label]), valid) < LEVEL
    }
    if not excess:
        return decisions
    out: list[Decision] = []
    for d in decisions:
        if d.aside and d.profile.label in excess:
            d = Decision(d.source, d.ch, replace(d.profile, verdict=EXCESS_OVERALL))
        out.append(d)
    return out


def reported(decisions: Iterable[Decision]) -> tuple[ColumnProfile, ...]:
    """The profiles a summary reports: at most :data:`MAX_REPORTED`, most findings first."""
    ranked = sorted(
        (d.profile for d in decisions), key=lambda p: (-p.valid, p.table, p.column, p.label)
    )
    return tuple(ranked[:MAX_REPORTED])
