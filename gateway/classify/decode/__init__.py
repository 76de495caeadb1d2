"""Streaming decode layers: raw bytes in, normalised text members out.

The :class:`Decoder` sits between the scanner's input and the matcher. It
opens containers and compressions as they stream (gzip, zstd, bz2, xz, zip,
tar; nested up to :attr:`ScanLimits.max_depth`), decides each member's type and
charset on a bounded prefix, reads the research formats through the readers
registered in :mod:`gateway.classify.formats`, and hands every text member to
a :class:`TextSink` as normalised UTF-8 (see :mod:`gateway.classify.charset`).
It never holds a whole member, except a nested member of a random-access
format up to a bound: every buffer is bounded by a named constant.

The package, one purpose per module:

* :mod:`.core`: limits, the :class:`TextSink` contract, the state a decode
  shares;
* :mod:`.sniffer`: what each stream is, decided on its first bytes;
* :mod:`.text`: text members and their media type (CSV, FASTA, VCF …);
* :mod:`.transforms`: the encodings text travels in (JSON escapes, character
  references, percent-encoding decoded in place; base64 and hex runs as
  nested members), between the text members and the sink;
* :mod:`.genomic`: the organism and assembly a text SAM/VCF/FASTA member's
  headers name (``ContentInfo.attributes``);
* :mod:`.layers`, :mod:`.compress`, :mod:`.archives`: the container layers
  (gzip, zstd, bz2, xz; zip, tar);
* :mod:`.readers`: format readers inside the decoder (streaming, buffered
  random access, deferred random access);
* :mod:`.binaries`, :mod:`.encrypted`: the known binaries and encrypted
  formats the decoder registers as formats itself;
* :mod:`.decoder`: the :class:`Decoder`.

Design decisions the spec leaves open (recorded here and in the docs):

* **Decide by content, never by file name.** Every stream — the input, each
  decompressed stream, each archive member — starts in a sniffer that buffers
  its first :data:`SNIFF_BYTES` (or all of it when shorter) and only then
  decides. The decision therefore never depends on how the input was chunked.
* **Chunk invariance under limits.** Decompressing layers re-cut their input
  into fixed :data:`BLOCK_BYTES` blocks before decompressing, so the
  decompressor sees the same calls for every chunking and a limit trips at the
  same output byte whatever the chunk sizes were.
* **"Sustained" expansion ratio.** A decompressing layer (or zip member) is
  refused once its output exceeds :data:`RATIO_GRACE_BYTES` *and* its
  cumulative output is more than ``max_ratio`` times its cumulative input. The
  grace keeps small, very compressible files (a page of zeros, a short
  repetitive log) scannable; past it the average ratio decides. Input counts
  in whole blocks, so a bomb is stopped after at most
  max(4 MiB, 100 x 64 KiB) of output, in constant memory.
* **Formats** are found through the registry (:mod:`gateway.classify.formats`),
  keyed by the sniffed prefix, and read as :mod:`.readers` says: streaming
  formats fed as they stream, random-access ones read whole once the member
  ended (buffered up to ``ScanLimits.max_nested_random_bytes`` when nested,
  from the caller's random-access view when the input itself is one). The
  known binaries (images and video: nothing scanned; PDF, OLE, SQLite fed
  raw and inspected; Parquet, HDF5, 7z, RAR, LZ4, compress, BAM, CRAM, BCF
  refused) are registered by :mod:`.binaries` below any family reader, and
  encrypted content (``openssl enc``, binary age and OpenPGP) by
  :mod:`.encrypted` above every reader: "<layer>: encrypted content".

  **Member names** (zip names, tar paths from ustar, pax or GNU long-name
  headers, and the names format readers give their members) are scanned too,
  each as a text member of type :data:`NAME_TYPE`: a scanned ID card is often
  named by its number.

  **Unknown binary** members are unscannable from their first byte ("binary:
  unknown format (starts like ELF executable)"): raw bytes of a binary format
  hide binary-encoded numbers, so they are never fed raw.
* **Unscannable findings** are reported once per layer path and reason
  (``("gzip", "zip")`` + ``"zip: encrypted member"``): three encrypted members
  of one zip give one finding, and the number of findings is bounded by a
  constant however many members an archive has.
* **ContentInfo of an archive** describes its *dominant* member: the one with
  the most decoded bytes (the first one on a tie), with the layers opened to
  reach it. A policy asking "is this VCF data?" should see the 2 GB VCF, not
  the README next to it. An archive without members reports the archive type.
* **Zip** is read through its local headers (the central directory at the end
  is never needed). STORED, DEFLATE and BZIP2 members are opened; a STORED
  member with a data descriptor has no length to stop at and is refused (as
  Java's ``ZipInputStream`` does). CRCs are not verified: the classifier scans
  what an extractor would produce either way.
* **Decoder memory is reserved before it is allocated**, from the process-wide
  :class:`~gateway.classify.budget.DecoderBudget` through the scan's account:
  every layer its fixed buffers (:data:`LAYER_BUFFER_BYTES`,
  :data:`TAR_BUFFER_BYTES`, :data:`FORMAT_BUFFER_BYTES`), a buffered
  random-access member its buffer (in :data:`RANDOM_BUFFER_STEP_BYTES`
  steps), and each decompressor its window as its header
  declares it: the zstd frame header's window size (RFC 8878 §3.1.1.1.2), the
  LZMA2 dictionary size in the first xz block header (the decompressor's
  ``memlimit`` is then exactly what was reserved), the bzip2 block size digit,
  zlib's fixed 32 KiB window. A layer's reservation only grows (a decompressor
  keeps its largest buffers) and is given back when the layer ends or fails,
  and all of it when the decoder is closed. The rule: a layer that would take
  its scan past ``ScanLimits.max_decoder_bytes`` (or the whole budget) is
  unscannable ("zstd: decoder memory over 256 MiB"); one that fits but finds
  the budget held by other scans raises
  :class:`~gateway.classify.budget.DecoderBusy` (503 + ``Retry-After``).
  Reservations happen at fixed points of the byte stream (a layer's start, a
  frame, stream or member header within a re-cut block), so they too are the
  same for every chunking.
"""

from __future__ import annotations

from gateway.classify.decode import binaries as _binaries
from gateway.classify.decode import encrypted as _encrypted
from gateway.classify.decode.archives import PAX_MAX_BYTES, TAR_BUFFER_BYTES
from gateway.classify.decode.binaries import FALLBACK_PRIORITY, OLE, PDF, SQLITE
from gateway.classify.decode.compress import (
    BZ2_BASE_BYTES,
    BZ2_PER_LEVEL_BYTES,
    XZ_MEMLIMIT_BYTES,
    XZ_STATE_BYTES,
    ZLIB_INFLATE_BYTES,
    ZSTD_MAX_WINDOW_BYTES,
    ZSTD_STATE_BYTES,
    bz2_memory,
    xz_dictionary,
)
from gateway.classify.decode.core import (
    BLOCK_BYTES,
    MAX_DECODER_BYTES,
    NAME_MAX_BYTES,
    NAME_TYPE,
    NESTED_RANDOM_MAX_BYTES,
    OCTET_STREAM,
    RATIO_GRACE_BYTES,
    SNIFF_BYTES,
    STEP_BYTES,
    ScanLimits,
    TextSink,
)
from gateway.classify.decode.decoder import ATTRIBUTE_SEPARATOR, Decoder
from gateway.classify.decode.layers import LAYER_BUFFER_BYTES
from gateway.classify.decode.readers import (
    FINDING_VALUE_MAX_BYTES,
    FORMAT_BUFFER_BYTES,
    RANDOM_BUFFER_STEP_BYTES,
)
from gateway.classify.decode.text import (
    APPLICATION_JSON,
    TEXT_CSV,
    TEXT_FASTA,
    TEXT_FASTA_PROTEIN,
    TEXT_FASTQ,
    TEXT_PLAIN,
    TEXT_SAM,
    TEXT_TSV,
    TEXT_VCF,
    sniff_text_type,
)
from gateway.classify.formats import Format

#: The formats the decoder registers itself (known binaries, encrypted
#: content), e.g. for tests that isolate the registry to them.
DECODER_FORMATS: tuple[Format, ...] = (*_encrypted.ENCRYPTED_FORMATS, *_binaries.BUILTIN_FORMATS)

__all__ = [
    "APPLICATION_JSON",
    "ATTRIBUTE_SEPARATOR",
    "BLOCK_BYTES",
    "BZ2_BASE_BYTES",
    "BZ2_PER_LEVEL_BYTES",
    "DECODER_FORMATS",
    "FALLBACK_PRIORITY",
    "FINDING_VALUE_MAX_BYTES",
    "FORMAT_BUFFER_BYTES",
    "LAYER_BUFFER_BYTES",
    "MAX_DECODER_BYTES",
    "NAME_MAX_BYTES",
    "NAME_TYPE",
    "NESTED_RANDOM_MAX_BYTES",
    "OCTET_STREAM",
    "OLE",
    "PAX_MAX_BYTES",
    "PDF",
    "RANDOM_BUFFER_STEP_BYTES",
    "RATIO_GRACE_BYTES",
    "SNIFF_BYTES",
    "SQLITE",
    "STEP_BYTES",
    "TAR_BUFFER_BYTES",
    "TEXT_CSV",
    "TEXT_FASTA",
    "TEXT_FASTA_PROTEIN",
    "TEXT_FASTQ",
    "TEXT_PLAIN",
    "TEXT_SAM",
    "TEXT_TSV",
    "TEXT_VCF",
    "XZ_MEMLIMIT_BYTES",
    "XZ_STATE_BYTES",
    "ZLIB_INFLATE_BYTES",
    "ZSTD_MAX_WINDOW_BYTES",
    "ZSTD_STATE_BYTES",
    "Decoder",
    "ScanLimits",
    "TextSink",
    "bz2_memory",
    "sniff_text_type",
    "xz_dictionary",
]
