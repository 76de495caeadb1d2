"""The contract between the decoder and the research-format readers (issue 12).

A *reader* understands one family of formats (tables, arrays, documents,
medical images, genomics, image metadata, model checkpoints). It never hands
raw bytes of a binary format to the matcher: it renders the values as text the
matcher already understands, in *text members* it opens on an
:class:`Extract`, and it reports what it cannot see as :class:`Unscannable`.

Two kinds of reader, chosen by the format's layout:

* :class:`StreamReader` — formats readable front to back in bounded memory
  (NumPy ``.npy``, Arrow IPC streams, DICOM, BAM, JPEG/TIFF metadata,
  safetensors and GGUF headers, e-mail). ``feed`` any chunking, then
  ``finish``; the result never depends on the chunking.
* :class:`RandomReader` — footer-indexed formats (Parquet, Arrow IPC files,
  ORC, HDF5, SQLite, PDF, OLE, zip-based documents). ``read`` gets a
  :class:`RandomAccess` view of the whole member once it has ended: the
  transfer's encrypted spool decrypted 64 KiB at a time, or a bounded buffer
  for a member nested in an archive. Never plaintext at rest. Such a format
  may also have a :class:`Scout`: a pass over the member's bytes as they
  arrive, whose notes its reader gets with the view (:func:`scout_notes`), so
  work that needs only the bytes in order is done while the upload streams,
  not after it (Parquet's page headers).

Readers are sans-I/O in the package's sense (no asyncio, no sockets): a
``RandomAccess`` is the only thing they read from. Every reader bounds what
it reads (rows, columns, pages, strings, nesting, bytes) by named constants;
past a bound, or on a corrupt or hostile file, it raises :class:`Unscannable`
with a reason that names the format and never a value from the file. A reader
must never crash with another exception, hang, or allocate without bound:
the registry turns any other exception into ``Unscannable`` as a last resort,
but that is a bug of the reader.
"""

from __future__ import annotations

import importlib
import io
import threading
from collections.abc import Callable, Iterable, Sequence
from types import ModuleType
from typing import Any, Final, NamedTuple, Protocol, runtime_checkable

#: Separator between cells of a rendered table: a comma, as in RFC 4180 CSV,
#: which the matcher's column rules (a ``diagnosis`` header) recognise.
CELL_SEPARATOR: Final = ","
#: Longest cell rendered. A cell longer than this is cut here and the rest is
#: rendered as the next cell of its own line part: identifiers are far
#: shorter, and a megabyte-long string cell must not be one matcher piece.
MAX_CELL_CHARS: Final = 64 << 10
#: Characters each piece of a cut cell repeats from the end of the piece
#: before: longer than any identifier the matcher knows (an e-mail address is
#: at most 254), so one that straddles a cut is whole in the next piece. One
#: lying wholly inside the repeat is counted twice (an over-count, the safe
#: direction; its distinct count is unchanged).
CELL_CUT_OVERLAP: Final = 256


class Unscannable(Exception):
    """The reader cannot see through this member (SPEC §3.1 ``content.unscannable``).

    Args:
        reason: what could not be read, prefixed by the format (``"parquet:
            encrypted footer"``, ``"hdf5: more than 10000 datasets"``); never
            a value, a name or any other text taken from the file.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@runtime_checkable
class RandomAccess(Protocol):
    """A read-only view of one whole member, readable at any offset."""

    @property
    def size(self) -> int:
        """Bytes in the member."""
        ...

    def read_at(self, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset``; fewer only at the end of the member.

        Raises:
            Unscannable: the underlying bytes failed authentication (a spool
                chunk that does not decrypt) or cannot be read.
        """
        ...


class Handoff(NamedTuple):
    """How another process reads a member itself (a reader process, :mod:`.isolation`).

    A view that lives in a file (the transfer's encrypted spool) can be read
    by the reader process directly, instead of through the gateway one range at
    a time: the gateway decrypted every byte the reader asked for and sent it
    down a pipe, a third of the gateway's CPU on a Parquet file.

    Attributes:
        file: the file: a path the gateway opens read-only, or a descriptor
            it duplicates; the reader process gets the descriptor.
        opener: ``module:function`` the reader process calls with the
            descriptor and ``params``; it returns a :class:`RandomAccess`
            over exactly the member's bytes (and owns the descriptor).
        params: what ``opener`` needs besides the file (a spool's size and key).
    """

    file: str | int
    opener: str
    params: bytes


def source_closed(source: RandomAccess) -> bool:
    """Whether ``source`` was closed under its reader (the scan was cancelled); a view
    that cannot be closed never is."""
    return getattr(source, "closed", False) is True


def handoff_of(source: RandomAccess) -> Handoff | None:
    """How a reader process may read ``source`` itself (None: through the gateway)."""
    handoff = getattr(source, "handoff", None)
    if not callable(handoff):
        return None
    got = handoff()
    return got if isinstance(got, Handoff) else None


def read_ranges(source: RandomAccess, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
    """``source.read_at`` of each ``(offset, length)``, in order.

    A source that crosses a process boundary (a reader process's view of the
    spool) asks for them all in one exchange, not one round trip each: a
    reader that walks many small independent reads (Parquet's page headers,
    one per column chunk at a time) then waits once per step.
    """
    many = getattr(source, "read_many", None)
    if many is not None:
        got: list[bytes] = many(ranges)
        return got
    return [source.read_at(offset, length) for offset, length in ranges]


class BytesAccess:
    """A :class:`RandomAccess` over bytes in memory (a member nested in an archive, tests)."""

    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)

    @property
    def size(self) -> int:
        """Bytes in the member."""
        return len(self._data)

    def read_at(self, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset`` (fewer at the end)."""
        if offset < 0 or length < 0:
            raise Unscannable("negative offset or length")
        return bytes(self._data[offset : offset + length])


class AccessFile(io.RawIOBase):
    """A read-only, seekable file object over a :class:`RandomAccess`.

    For libraries that read from a Python file object (pyarrow, h5py,
    pydicom, pypdfium2). Reads past the end return short; writes are refused.
    """

    def __init__(self, source: RandomAccess) -> None:
        super().__init__()
        self._source = source
        self._pos = 0

    def readable(self) -> bool:
        """Always true."""
        return True

    def seekable(self) -> bool:
        """Always true."""
        return True

    def tell(self) -> int:
        """The current offset."""
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move to ``offset`` (``whence`` as in :meth:`io.IOBase.seek`)."""
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._source.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        return pos

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        """Fill ``buffer`` from the current offset; 0 at the end."""
        view = memoryview(buffer).cast("B")
        data = self._source.read_at(self._pos, len(view))
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (the rest of the member when negative)."""
        if size is None or size < 0:
            size = max(0, self._source.size - self._pos)
        data = self._source.read_at(self._pos, size)
        self._pos += len(data)
        return data

    def readall(self) -> bytes:
        """The rest of the member."""
        return self.read(-1)

    @property
    def size(self) -> int:
        """Bytes in the member."""
        return self._source.size


class TextOut(Protocol):
    """One text member being written: UTF-8 text the matcher scans."""

    def write(self, text: str | bytes) -> None:
        """Append ``text`` (any amount; cut anywhere): a str, or its UTF-8 (a lone
        surrogate as ``surrogatepass`` encodes it), cut between characters."""
        ...

    def close(self) -> None:
        """End the member: no identifier spans two members."""
        ...


class BinaryOut(Protocol):
    """A nested member handed back to the decoder (an e-mail attachment, a file
    embedded in a PDF, a blob cell): sniffed and decoded like any member, one
    layer deeper, under the same depth, ratio and size limits."""

    def write(self, data: bytes) -> None:
        """Append raw bytes of the nested member."""
        ...

    def close(self) -> None:
        """End the nested member."""
        ...


class Extract(Protocol):
    """Where a reader puts what it found (implemented by the decoder; tests use
    :class:`gateway.classify.formats.testing.RecordingExtract`).

    The decoder's matcher reads one member at a time: opening a member (text
    or nested) ends the one open before. Writing again to an earlier *text*
    member continues it as a new member (fine for whole lines, but a table's
    header row no longer precedes what follows); writing to an earlier
    *nested* member is a reader bug. Write a nested member whole (open, write,
    close) before going on.
    """

    def member(self, name: str, content_type: str) -> TextOut:
        """Open a text member.

        Args:
            name: where in the file it comes from (``"table patients"``,
                ``"page 3"``, ``"dataset /cohort/ids"``); scanned like an
                archive member's name, so file-chosen names are scanned too.
            content_type: how the matcher reads it: ``text/csv`` for tables
                (header row of column names, then one line per row),
                ``text/plain`` for prose and metadata, ``text/x-sam`` /
                ``text/x-vcf`` for genomic records (one finding per line).
        """
        ...

    def nested(self, name: str) -> BinaryOut:
        """Open a nested member whose bytes the decoder sniffs and decodes.

        Args:
            name: its name (an attachment's file name), scanned like an
                archive member's name.
        """
        ...

    def finding(self, label: str, value: bytes) -> None:
        """One finding not made by the matcher (a DICOM instance that identifies
        its patient: ``sensitive.health`` with the patient as ``value``).

        ``value`` is only ever hashed with the gateway's key for distinct
        counting; it is never stored, logged or returned.
        """
        ...

    def attribute(self, key: str, value: str) -> None:
        """A fact policies may condition on: ``organism`` (``Homo sapiens``),
        ``assembly`` (``GRCh38``). Values come from a fixed vocabulary the
        reader maps to, never free text from the file."""
        ...

    def numeric(self, values: int) -> None:
        """``values`` numbers that were seen and deliberately not rendered
        (float datasets, tensor payloads): counted, never scanned."""
        ...


class StreamReader(Protocol):
    """A reader fed the member's bytes front to back."""

    def feed(self, data: bytes) -> None:
        """The next bytes of the member (any chunking).

        Raises:
            Unscannable: the member cannot be read (the rest is ignored).
        """
        ...

    def finish(self) -> None:
        """The member ended.

        Raises:
            Unscannable: it ended early or was otherwise unreadable.
        """
        ...


class Scout(Protocol):
    """A pass over a random-access member's bytes as they arrive (``Format.scout``).

    Its notes are a hint its reader may use instead of reading the same bytes
    again after the upload; a reader must read exactly what it would have read
    without them (a scout that gave up early, or a file the notes do not fit,
    leaves the reader to read for itself). A scout never raises: what it cannot
    follow, it stops noting. Its work and its notes are bounded by its format.
    """

    def feed(self, data: bytes) -> None:
        """The member's next bytes (any chunking: the notes never depend on it)."""
        ...

    def notes(self) -> bytes:
        """What was noted, once the member has ended (bytes the reader decodes)."""
        ...


class ScoutedAccess:
    """A :class:`RandomAccess` that also carries its format's scout notes.

    A reader process gets the notes before its first read (they cross the
    process boundary once); in line the reader gets this view itself. Either
    way :func:`scout_notes` finds them. Every other attribute is the view's
    underneath (its ``handoff``, ``closed``, ``read_many``, counters).
    """

    __slots__ = ("_source", "scout_notes")

    def __init__(self, source: RandomAccess, notes: bytes) -> None:
        self._source = source
        self.scout_notes = notes

    @property
    def size(self) -> int:
        """Bytes in the member."""
        return self._source.size

    def read_at(self, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset`` (fewer at the end)."""
        return self._source.read_at(offset, length)

    def __getattr__(self, name: str) -> Any:
        """The view underneath's attribute (AttributeError where it has none)."""
        if name == "_source":  # not set yet: never look for it in itself
            raise AttributeError(name)
        return getattr(self._source, name)


def scout_notes(source: RandomAccess) -> bytes:
    """The notes the member's scout made as it streamed (empty: none, or no scout)."""
    notes = getattr(source, "scout_notes", b"")
    return notes if isinstance(notes, bytes) else b""


class RandomReader(Protocol):
    """A reader given random access to the whole member."""

    def __call__(self, source: RandomAccess, out: Extract) -> None:
        """Read the member and report into ``out``.

        Raises:
            Unscannable: it cannot be read, or a bound was reached.
        """
        ...


def csv_cell(value: str) -> str:
    """One value as an RFC 4180 cell: quoted when it holds a separator, quote or line break.

    Cells longer than :data:`MAX_CELL_CHARS` are cut into several cells, each
    after the first starting :data:`CELL_CUT_OVERLAP` characters before the
    end of the one before: an identifier cut in two by a comma would not be
    found, a whole one in the overlap is.
    """
    if len(value) > MAX_CELL_CHARS:
        step = MAX_CELL_CHARS - CELL_CUT_OVERLAP
        return CELL_SEPARATOR.join(
            csv_cell(value[i : i + MAX_CELL_CHARS])
            for i in range(0, len(value) - CELL_CUT_OVERLAP, step)
        )
    if any(c in value for c in ',"\n\r'):
        return '"' + value.replace('"', '""') + '"'
    return value


def csv_line(values: Iterable[str]) -> str:
    """One rendered row (or header row), newline-terminated."""
    return CELL_SEPARATOR.join(csv_cell(v) for v in values) + "\n"


def write_table(out: TextOut, header: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
    """Render a table: the header row of column names, then one line per row."""
    out.write(csv_line(header))
    for row in rows:
        out.write(csv_line(row))


class LazyModule:
    """A module imported on its first attribute access.

    A family's library (pyarrow, pydicom …) costs tens of MB of RSS once
    imported; the registry imports every family at the first scan, so a
    gateway that never sees a Parquet file would carry pyarrow all the same
    (SPEC §9: < 150 MB for a 5 GB transfer). Readers name their libraries
    through this, and the import happens when a file of that format arrives.

    Args:
        name: the module's import name (``pyarrow.compute``).
        on_load: called once with the module after its import (process-wide
            settings such as Arrow's memory pool).
    """

    def __init__(self, name: str, on_load: Callable[[ModuleType], None] | None = None) -> None:
        self.__dict__["_name"] = name
        self.__dict__["_on_load"] = on_load
        self.__dict__["_module"] = None

    def _load(self) -> ModuleType:
        module: ModuleType | None = self.__dict__["_module"]
        if module is None:
            with _LAZY_LOCK:
                module = self.__dict__["_module"]
                if module is None:
                    module = importlib.import_module(self.__dict__["_name"])
                    hook = self.__dict__["_on_load"]
                    if hook is not None:
                        hook(module)
                    self.__dict__["_module"] = module
        return module

    def __getattr__(self, attr: str) -> Any:
        """The module's attribute (importing the module the first time)."""
        return getattr(self._load(), attr)


_LAZY_LOCK: Final = threading.RLock()
