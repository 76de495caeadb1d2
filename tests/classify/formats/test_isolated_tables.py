"""The Arrow-based table readers run in reader processes (issue 12; isolation.py).

What the scanner sees must be exactly what the same reader reports in line,
for any file, and the gateway's own process must never load pyarrow.
"""

from __future__ import annotations

import io
import random
import subprocess
import sys

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.orc as orc
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.classify import DetectorSet
from gateway.classify.formats import isolation
from gateway.classify.formats.testing import scan_bytes
from gateway.classify.summary import ScanSummary
from gateway.classify.testing import cn_mobile, resident_id

DETECTORS = DetectorSet.build()
KINDS = ("parquet", "arrow", "arrow-stream", "orc")


def _patients(rows: int, kind: str) -> bytes:
    rng = random.Random(5)
    table = pa.table(
        {
            "resident_id": [resident_id(rng) for _ in range(rows)],
            "mobile": pa.array([int(cn_mobile(rng)) for _ in range(rows)], pa.int64()),
            "diagnosis": ["J45.0", "E11.9", "I10", "K21.0"] * (rows // 4),
            "weight_kg": [60.0 + i / 10 for i in range(rows)],
            "seen": pa.array(range(rows), pa.timestamp("ms")),
        }
    )
    sink = io.BytesIO()
    if kind == "parquet":
        pq.write_table(table, sink, row_group_size=rows // 3)
    elif kind == "arrow":
        with ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=rows // 3)
    elif kind == "arrow-stream":
        with ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=rows // 3)
    else:
        orc.write_table(table, sink)
    return sink.getvalue()


def _in_line(data: bytes) -> ScanSummary:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(isolation._ZYGOTE, "supported", False)
        return scan_bytes(DETECTORS, data)


@pytest.mark.parametrize("kind", KINDS)
def test_a_large_table_reads_the_same_in_a_reader_process_or_in_line(kind: str) -> None:
    data = _patients(60_000, kind)
    isolated = scan_bytes(DETECTORS, data)
    assert isolated.labels["pii.cn_resident_id"].count == 60_000
    assert isolated.labels["pii.cn_phone"].count == 60_000
    assert isolated.labels["sensitive.health"].count == 60_000
    assert isolated.numeric_values == 60_000
    inline = _in_line(data)
    assert isolated.to_json() | {"seconds": 0} == inline.to_json() | {"seconds": 0}
    assert isolated.digests == inline.digests


_SMALL = {kind: _patients(400, kind) for kind in KINDS}


@settings(deadline=None, max_examples=40, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_files_give_the_same_summary_in_a_reader_process_or_in_line(
    data: st.DataObject,
) -> None:
    """Whatever a damaged file makes the reader do (fail early, late, or not at all)."""
    mutated = bytearray(_SMALL[data.draw(st.sampled_from(KINDS))])
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(mutated) - 1))
        mutated[at] ^= 1 << data.draw(st.integers(0, 7))
    file = bytes(mutated)
    isolated, inline = scan_bytes(DETECTORS, file), _in_line(file)
    assert isolated.to_json() | {"seconds": 0} == inline.to_json() | {"seconds": 0}


@pytest.mark.parametrize("kind", KINDS)
def test_the_gateway_process_never_loads_pyarrow(kind: str) -> None:
    """A table is read, and read right, while pyarrow stays out of the scanning process."""
    code = (
        "import sys\n"
        "from gateway.classify import DetectorSet, Scanner\n"
        "from gateway.classify.formats.base import BytesAccess\n"
        "data = sys.stdin.buffer.read()\n"
        "with Scanner(DetectorSet.build(), b'k' * 32) as scanner:\n"
        "    scanner.feed(data)\n"
        "    summary = scanner.finish(BytesAccess(data))\n"
        "print(summary.content.type, summary.labels['pii.cn_resident_id'].count,\n"
        "      sorted(m for m in ('pyarrow', 'numpy') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        input=_patients(400, kind),
        capture_output=True,
        check=True,
        timeout=120,
    )
    media, count, loaded = done.stdout.decode().split(" ", 2)
    assert media.startswith("application/vnd.apache.")
    assert int(count) == 400
    assert loaded.strip() == "[]"
