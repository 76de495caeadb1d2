"""Type stub of the compiled matcher core (``_native.c``)."""

from collections.abc import Callable, Sequence

OP_PYTHON: int
OP_DIGITS: int
OP_USCC: int
OP_GROUPED: int
OP_LETTERS: int
OP_HKID_BRACKETS: int
OP_EMAIL: int
G_BASE: int
G_TOKEN: int
G_SPACE: int
G_BREAK: int
G_OTHER: int
G_ESCAPE: int
DIGIT_CORE_RUN: int
DIGIT_CORE_GROUP: int
DIGIT_CORE_SEPARATORS: bytes
DIGIT_CORE_WORDS: tuple[bytes, bytes]
DIGIT_REACH_MAX: int

class Core:
    def __init__(
        self,
        *,
        ops: bytes,
        spec_labels: Sequence[int],
        spec_args: Sequence[int],
        ranks: Sequence[int],
        groups: Sequence[int],
        labels: Sequence[int],
        hotwords: Sequence[Sequence[tuple[bytes, bool]]],
        today: tuple[int, int, int],
        secret: bytes,
        max_distinct: int,
        max_total: int,
        tail_bytes: int,
    ) -> None: ...
    @property
    def capped(self) -> bool: ...
    def process(
        self,
        hits: list[int],
        chunk: bytes,
        offset: int,
        tail: bytes,
        starts: dict[int, int],
        handlers: list[Callable[[int, int, int, int], None]],
        matcher: object,
        /,
    ) -> None: ...
    def accept(self, label: int, value: bytes, /) -> None: ...
    def propose(self, label: int, start: int, end: int, value: bytes, /) -> bool: ...
    def commit(self) -> None: ...
    def drop_pending(self) -> None: ...
    def stats(self) -> list[tuple[int, int]]: ...
    def digests(self, label: int, prefix: bytes, /) -> frozenset[bytes]: ...
    def values(self, label: int, /) -> frozenset[bytes]: ...

def validate(name: str, value: bytes, today: tuple[int, int, int] = ..., /) -> bool: ...
def genetic_runs(
    data: bytes,
    offset: int,
    tail: bytes,
    state: tuple[int, int, int],
    pid: int,
    hits: list[int],
    /,
) -> tuple[int, int, int]: ...
def genetic_setup(
    classes: bytes,
    escaped: bytes,
    min_run: int,
    space_max: int,
    kinds: tuple[int, int, int, int],
    /,
) -> None: ...
def genetic_tables() -> tuple[bytes, bytes, int, int, tuple[int, int, int, int]]: ...
def fold(data: bytes, /) -> bytes: ...
def simd(name: str = ..., /) -> str: ...
def digit_windows(data: bytes, tail: bytes, reach: int, skip: int, dense: int, /) -> list[int]: ...
def find_lead(data: bytes, start: int, stop: int, lead: bytes, follow: bytes, /) -> int: ...
def find_any(data: bytes, start: int, stop: int, chars: bytes, /) -> int: ...
def next_run(
    data: bytes, start: int, stop: int, run: int, digits: int, min_run: int, min_digits: int, /
) -> tuple[int, int, int]: ...
def alphabet_run(
    data: bytes, start: int, stop: int, run: int, digits: int, min_run: int, min_digits: int, /
) -> tuple[int, int, int]: ...
def fold_setup(code_points: bytes, offsets: bytes, blob: bytes, /) -> None: ...
