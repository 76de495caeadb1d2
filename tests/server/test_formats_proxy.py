"""Research formats through the real parks (issue 12): the classifier reads, the policy decides.

A Parquet table of Resident ID numbers is blocked on ``sz-lab`` with the label
named; the same table without them is allowed and arrives byte-identical.
Small files are read from the in-memory spool, large ones (several spool
chunks, pipelined to the twin) through the decrypting spool view.
"""

from __future__ import annotations

import io
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gateway.classify.testing import cn_mobile, resident_id
from tests.server.conftest import Parks


def _parquet(rows: int, *, people: bool, seed: int = 7) -> bytes:
    rng = random.Random(seed)
    columns: dict[str, list[object]] = {
        "sample_id": [f"sample-{n}" for n in range(rows)],
        "reading": [rng.uniform(0, 100) for _ in range(rows)],
        "depth": [rng.randint(0, 5000) for _ in range(rows)],
    }
    if people:
        columns["resident_id"] = [resident_id(rng) for _ in range(rows)]
        columns["mobile"] = [int(cn_mobile(rng)) for _ in range(rows)]
    sink = io.BytesIO()
    pq.write_table(pa.table(columns), sink, compression="snappy")
    return sink.getvalue()


@pytest.mark.parametrize("rows", [200, 60_000], ids=["memory-spool", "spool-view"])
async def test_a_parquet_table_of_resident_ids_is_blocked(parks: Parks, rows: int) -> None:
    data = _parquet(rows, people=True)
    status, body = await parks.put("sz-lab", "cohort.parquet", data)
    assert status == 403, body
    assert body["labels"]["pii.cn_resident_id"]["count"] == rows
    assert body["labels"]["pii.cn_phone"]["count"] == rows
    assert body["subjects"] == rows
    assert parks.inbox_files() == {}


@pytest.mark.parametrize("rows", [200, 60_000], ids=["memory-spool", "spool-view"])
async def test_a_clean_parquet_table_is_delivered_byte_identical(parks: Parks, rows: int) -> None:
    data = _parquet(rows, people=False)
    status, body = await parks.put("sz-lab", "readings.parquet", data)
    assert status == 201, body
    assert not [label for label in body["labels"] if label.startswith("pii.")]
    assert parks.inbox_files() == {"readings.parquet": data}
    records = [r for r in parks.audit_events() if r.get("event") == "allowed"]
    assert records[-1]["content_type"] == "application/vnd.apache.parquet"
