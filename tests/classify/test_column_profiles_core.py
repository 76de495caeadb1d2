"""Column profiles: the compiled core on a million rows, and the core against the
reference on one table (both explicitly, so outside the two-core fixture)."""

from __future__ import annotations

import random

from gateway.classify import labels as L
from gateway.classify.matcher import TextMatcher
from gateway.classify.testing import cn_mobile, resident_id
from tests.classify.test_column_profiles import (
    DETECTORS,
    _assay,
    _number,
    _scan,
    _table,
    _tested_findings,
)


def test_a_million_row_column_gives_no_finding() -> None:
    # The compiled core only: the reference takes minutes on a million rows.
    rng = random.Random(22)
    data = "sample_id\n" + "".join(f"{rng.randint(10**10, 10**11 - 1)}\n" for _ in range(10**6))
    summary = _scan(data.encode())
    assert _tested_findings(summary) == {}
    assert 76_000 < summary.chance[L.CN_PHONE].count < 79_600


def test_the_core_and_the_reference_agree_on_every_profile() -> None:
    rng = random.Random(33)
    columns = _assay(rng, rows=3000)
    columns["contact"] = [cn_mobile(rng) if i % 3 else _number(rng, 11) for i in range(3000)]
    columns["id_no"] = [resident_id(rng) if i % 50 == 0 else _number(rng, 18) for i in range(3000)]
    data = _table(columns, quoted=True)
    results = []
    for native in (True, False):
        m = TextMatcher(DETECTORS, b"k" * 32, native=native)
        m.begin_member("text/csv")
        for i in range(0, len(data), 10_000):
            m.text(data[i : i + 10_000])
        m.end_member()
        r = m.result()
        results.append(
            (r.labels, r.digests, r.chance, r.chance_digests, [p.to_json() for p in r.columns])
        )
    assert results[0] == results[1]
    # Not trivially equal: both found the real numbers and set the random ones aside.
    assert results[0][0][L.CN_PHONE].count >= 2000
    assert results[0][2]
