"""Table formats: Parquet, Arrow IPC (file, stream, Feather), ORC, Avro and SQLite (issue 12).

Every table is rendered as one ``text/csv`` member: a header row of column
names, then one line per row, one cell per value (see
:func:`gateway.classify.formats.base.csv_line`). What each value becomes:

* integers as decimal digits, decimals as their exact decimal text, booleans
  as ``true``/``false``, dates and timestamps as ISO dates (a timestamp's
  time of day holds no identifier; ``common._timestamp_text``), times as
  Arrow prints them, strings as they are;
* floating-point values are *counted* (:meth:`Extract.numeric`); only whole
  numbers of identifier size are rendered, as their digits (pandas stores an
  integer column with a gap as floats), the others are not: skipping them is
  the largest single saving on scientific tables;
* struct columns become one column per leaf (``visit.clinic``); list and map
  cells hold their leaf values separated by spaces;
* binary cells that are UTF-8 text (no control characters) are rendered as
  text; binary cells that start like a file (zip, gzip, PDF, an image, any
  format of the registry) are handed back to the decoder as nested members,
  which it decodes like any member (:data:`MAX_NESTED_CELLS` at most); any
  other binary cell is opaque bytes that could hide binary-encoded numbers, so
  the table is rendered and then reported unscannable ("<format>: binary
  cells that are neither text nor a file"). Columns typed as UUIDs render as
  canonical UUID text.

Arrow-based formats are rendered a record batch at a time with the Arrow
compute kernels (cast to string, join element-wise), never a Python loop per
cell; file metadata (key/value pairs, names of columns not rendered) goes to
a ``text/plain`` member named ``metadata``.

Readers and why each library:

* Parquet, Arrow IPC file (Feather v2), ORC — random access through
  ``pyarrow`` (the reference implementation, already a dependency; the file
  object is :class:`~gateway.classify.formats.base.AccessFile`). pyarrow is
  not hardened against hostile files everywhere, so the metadata it would
  trust is read and bounded here first: Parquet footers and page headers
  (Thrift compact), Arrow IPC message framing and footer blocks
  (FlatBuffers), the ORC postscript and type tree (protobuf). Batches read
  from Arrow IPC are fully validated before a kernel touches them.
* Feather v1 (legacy) — recognised and refused: pyarrow's v1 reader crashes
  on mutated files, and v1 has been deprecated since 2020.
* Arrow IPC stream — read from the spool after the upload, like the other
  Arrow formats: messages are framed here and pyarrow decodes a record batch
  once all its bytes have been framed, so nothing is buffered beyond one
  batch and its dictionaries.
* Avro object container files — a :class:`StreamReader`: the container
  (header, blocks, sync markers, codecs) is parsed here with bounded
  decompression, records are decoded by ``fastavro``'s schemaless reader.
* SQLite — a small reader of the documented file format
  (https://www.sqlite.org/fileformat.html: b-tree pages, overflow chains,
  record format) over the random-access view, because Python's ``sqlite3``
  reads only files or whole in-memory images. Every table is read, including
  ``sqlite_schema`` itself (its SQL text can hold values).

Modules: :mod:`.common` (the libraries, the bounds every reader shares, the
rendering), :mod:`.parquet`, :mod:`.arrow` (IPC file, IPC stream, Feather
v1), :mod:`.orc`, :mod:`.avro`, :mod:`.sqlite`. Importing this package
registers every format with :mod:`gateway.classify.formats`.
"""

from __future__ import annotations

# The formats register as their modules are imported, in this order, which
# breaks ties between sniffers of equal priority (formats()): keep it.
# isort: off
from gateway.classify.formats.tables.parquet import PARQUET, read_parquet
from gateway.classify.formats.tables.arrow import (
    ARROW_FILE,
    ARROW_STREAM,
    FEATHER_V1,
    ArrowStreamReader,
    read_arrow_file,
    read_feather_v1,
)
from gateway.classify.formats.tables.orc import ORC, read_orc
from gateway.classify.formats.tables.avro import AVRO, AvroReader
from gateway.classify.formats.tables.sqlite import SQLITE, read_sqlite

# isort: on

__all__ = [
    "ARROW_FILE",
    "ARROW_STREAM",
    "AVRO",
    "FEATHER_V1",
    "ORC",
    "PARQUET",
    "SQLITE",
    "ArrowStreamReader",
    "AvroReader",
    "read_arrow_file",
    "read_feather_v1",
    "read_orc",
    "read_parquet",
    "read_sqlite",
]
