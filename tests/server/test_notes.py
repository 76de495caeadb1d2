"""Officers' comments and senders' justifications: refused when they hold a value.

They are written to the audit log and shown to reviewers, so a note is read as
a name is (core.name_text): a full stop before a number separates words, and
a base64 or hex token is decoded.
"""

from __future__ import annotations

import base64

import pytest

from gateway.classify.detectors import DetectorSet
from gateway.errors import ClientError
from gateway.server.notes import clean_note

DETECTORS = DetectorSet.build()
SECRET = b"n" * 32
RID = "11010519491231002X"


@pytest.mark.parametrize(
    "note",
    [
        f"patient {RID}",
        f"Ref.{RID}",
        f"see file scan.{RID}.csv",
        f"ref {base64.b64encode(RID.encode()).decode()}",
        f"ref {RID.encode().hex()}",
        "call 13812345678 about it",
    ],
)
def test_a_note_holding_a_value_is_refused_without_echoing_it(note: str) -> None:
    with pytest.raises(ClientError) as refused:
        clean_note(note, "justification", DETECTORS, SECRET)
    assert RID not in str(refused.value)
    assert "13812345678" not in str(refused.value)


@pytest.mark.parametrize(
    "note",
    ["urgent: grant deadline 2026-12-31", "v1.2 of the pipeline, see ticket 4711", "ok"],
)
def test_an_ordinary_note_passes_folded_to_single_spaces(note: str) -> None:
    assert clean_note(f"  {note}\n", "justification", DETECTORS, SECRET) == note
