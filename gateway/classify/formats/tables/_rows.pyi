"""Type stub of the compiled table renderer and page-header reader (``_rows.c``)."""

from collections.abc import Sequence

EMPTY: int
INT: int
FLOAT: int
DATE: int
STR: int
DICT: int
FLOAT_MIN: float
FLOAT_MAX: float
FIRST_DAY: int
LAST_DAY: int

def render_rows(
    columns: Sequence[tuple[object, ...]],
    start: int,
    stop: int,
    budget: int,
    max_cell: int,
    max_row: int,
    /,
) -> tuple[bytes, int] | None: ...
def page_header(data: bytes, max_nesting: int, /) -> tuple[int, int, int, int, int] | None: ...
