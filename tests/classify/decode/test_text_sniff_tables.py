"""Which text is a table: rows of one width, ragged rows, and prose with commas."""

from __future__ import annotations

import pytest

from gateway.classify.decode.text import sniff_text_type


@pytest.mark.parametrize(
    "text",
    [
        b"a,b,c\n1,2,3\n4,5,6\n",
        # A spreadsheet's export leaves a row's trailing empty cells out.
        b"a,b,c\n1,2,3\n4,5\n7,8,9\n1,2,3\n4,5,6\n",
        b"a\tb\n1\t2\n3\t4\n",
        b"a;b\n1;2\n",
    ],
)
def test_delimited_rows_are_a_table(text: bytes) -> None:
    assert sniff_text_type(text, complete=True) in ("text/csv", "text/tab-separated-values")


@pytest.mark.parametrize(
    "text",
    [
        # Half the rows short: not the ragged end of a table.
        b"a,b,c\n1,2\n3,4\n5,6,7\n8\n",
        b"We met in Futian, then in Sha Tin.\nThe samples, all of them, arrived.\nDone.\n",
        b"one line only, with a comma\n",
    ],
)
def test_other_text_is_not(text: bytes) -> None:
    assert sniff_text_type(text, complete=True) == "text/plain"
