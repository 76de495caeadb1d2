"""Random access to a finished encrypted spool, decrypted 64 KiB at a time (issue 12).

Footer-indexed formats (Parquet, Arrow IPC files, ORC, HDF5, SQLite, PDF,
zip-based documents) cannot be read front to back: their index is at the end
and points back into the file. Their readers run once the upload ended, on a
:class:`SpoolView`: a read-only
:class:`~gateway.classify.formats.base.RandomAccess` over the transfer's spool.

The spool is an age payload (:mod:`gateway.server.spool`): a 16-byte nonce,
then STREAM chunks of 64 KiB plaintext + 16-byte tag, chunk *k* sealed with
the nonce ``k || last-flag`` (:mod:`gateway.crypto.stream`). Every chunk is
authenticated on its own, so the view opens only the chunks a read touches:
chunk *k* of the payload is at a fixed offset, and only the last chunk is
opened with the last flag (so a spool cut at a chunk boundary fails too).
Plaintext exists only in memory: in the bounded chunk cache and in what
:meth:`SpoolView.read_at` returns. Nothing is ever written. A reader process
reads a spool file itself (:meth:`SpoolView.handoff`, :func:`open_handed`):
with the descriptor and key the gateway hands it, through a view of its own.

The size comes from the :class:`~gateway.server.spool.SpoolInfo` the writer
returned (process memory, not the disk): a payload file that is not exactly
as long as that plaintext seals to was truncated or extended, and every read
fails. A chunk that does not authenticate fails every read that touches it,
and none of its bytes is returned.

Blocking file I/O (``pread``); the egress uses a view from a worker thread.
Reads may come from several threads at once (``pread`` has no shared file
position; a lock guards the cache and the descriptor).
"""

from __future__ import annotations

import os
import struct
import threading
from collections import OrderedDict
from pathlib import Path
from types import TracebackType
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from gateway.classify.formats.base import Handoff, Unscannable
from gateway.crypto.header import FILE_KEY_SIZE
from gateway.crypto.stream import (
    CHUNK_SIZE,
    ENCRYPTED_CHUNK_SIZE,
    PAYLOAD_NONCE_SIZE,
    TAG_SIZE,
    chunk_nonce,
    payload_key,
)
from gateway.server.spool import SpoolInfo

#: Plaintext chunks a view keeps decrypted: 64 x 64 KiB = 4 MiB per transfer.
#: A footer-indexed reader returns to a few places (the footer, an index, the
#: page it is in, the chunk boundaries its reads straddle); pyarrow's Parquet
#: footer with its page indexes is typically well under 1 MiB, a SQLite or
#: HDF5 b-tree walk revisits a few dozen pages. 4 MiB holds all of that,
#: while the readers' own buffers (a decoded row group) dominate anyway.
VIEW_CACHE_CHUNKS: Final = 64
#: The largest single :meth:`SpoolView.read_at`: 256 MiB, the decoder's
#: per-transfer memory cap (``MAX_DECODER_BYTES``). A footer lying about a
#: column chunk's length must not make one read allocate gigabytes; readers
#: read far less at a time (pyarrow reads a column chunk, or ``buffer_size``
#: pieces of it when asked to stream).
MAX_READ_BYTES: Final = 256 << 20

#: A handed-over spool's parameters (:meth:`SpoolView.handoff`): its plaintext
#: size, then the file key.
_HANDED: Final = struct.Struct("<Q")

_AUTH_FAILED = "spool: chunk failed authentication"
_WRONG_SIZE = "spool: truncated or extended (not the size that was sealed)"
_CLOSED = "spool: the view was closed (the scan was cancelled)"


class SpoolView:
    """A read-only, decrypting :class:`~gateway.classify.formats.base.RandomAccess` over a spool.

    Opens nothing until the first read, so creating one costs no I/O (and a
    view closed before its first read never opens the file). Use as a context
    manager, or call :meth:`close`: the descriptor is closed on every path.

    Args:
        info: the finished spool (file or in-memory payload, file key, sizes).
        cache_chunks: decrypted chunks kept (least recently used dropped first).
        fd: the payload file, already open for reading (a reader process's
            view of a spool handed over, :func:`open_handed`); the view owns
            it. -1: ``info.path`` is opened at the first read.

    Raises:
        ValueError: ``cache_chunks`` is below 2 (a read straddling a chunk
            boundary keeps both of its edge chunks).
    """

    __slots__ = (
        "_aead",
        "_cache",
        "_cache_chunks",
        "_chunks",
        "_closed",
        "_fd",
        "_info",
        "_lock",
        "_memory",
        "_size",
        "_wrong_size",
        "cache_hits",
        "chunks_decrypted",
        "peak_cached",
        "reads",
    )

    def __init__(
        self, info: SpoolInfo, *, cache_chunks: int = VIEW_CACHE_CHUNKS, fd: int = -1
    ) -> None:
        if cache_chunks < 2:
            if fd >= 0:
                os.close(fd)
            raise ValueError("a spool view needs a cache of at least 2 chunks")
        self._info = info
        self._size = info.plaintext_bytes
        # An empty plaintext is still one (empty, final) chunk.
        self._chunks = max(1, -(-self._size // CHUNK_SIZE))
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._cache_chunks = cache_chunks
        self._lock = threading.Lock()
        self._fd = fd
        self._memory: memoryview | None = None
        self._aead: ChaCha20Poly1305 | None = None
        self._wrong_size = False
        self._closed = False
        #: Calls of :meth:`read_at` that returned bytes.
        self.reads = 0
        #: Chunks read from the spool and authenticated (cache misses).
        self.chunks_decrypted = 0
        #: Chunk lookups answered from the cache.
        self.cache_hits = 0
        #: The most chunks the cache ever held at once (never above ``cache_chunks``).
        self.peak_cached = 0

    @property
    def size(self) -> int:
        """Plaintext bytes in the spool."""
        return self._size

    def count_handed_reads(self, decrypted: int, cached: int) -> None:
        """Add what a reader process's own view of this spool read (:meth:`handoff`) to
        this view's counters, which the egress's metrics report."""
        with self._lock:
            self.chunks_decrypted += decrypted
            self.cache_hits += cached

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (a reader process reading the spool itself
        is then stopped by the gateway: it never asks this view for a read)."""
        return self._closed

    @property
    def cached_chunks(self) -> int:
        """Decrypted chunks held now."""
        return len(self._cache)

    def handoff(self) -> Handoff | None:
        """How a reader process reads this spool itself: the payload file, its size and key.

        The reader process then decrypts what it reads (authenticating every
        chunk, as here) instead of the gateway decrypting it and sending the
        plaintext down a pipe. The key crosses a pipe between the gateway and
        its own reader process, which sees the member's plaintext anyway;
        nothing is written. None when the payload is in memory (a small spool)
        or the view was closed.
        """
        with self._lock:
            if self._closed or self._info.payload is not None:
                return None
        params = _HANDED.pack(self._size) + self._info.file_key
        return Handoff(str(self._info.path), f"{__name__}:open_handed", params)

    def read_at(self, offset: int, length: int) -> bytes:
        """``length`` plaintext bytes from ``offset``; fewer only at the end.

        Raises:
            Unscannable: a touched chunk failed authentication, the spool was
                truncated or extended, could not be read, or the view was
                closed; or the read is negative or over :data:`MAX_READ_BYTES`.
        """
        if offset < 0 or length < 0:
            raise Unscannable("spool: negative offset or length")
        end = min(offset + length, self._size)
        if offset >= end:
            return b""
        if end - offset > MAX_READ_BYTES:
            raise Unscannable(f"spool: a single read over {MAX_READ_BYTES >> 20} MiB")
        first, last = offset // CHUNK_SIZE, (end - 1) // CHUNK_SIZE
        if first == last:
            start = offset - first * CHUNK_SIZE
            data = self._chunk(first, keep=True)[start : start + end - offset]
        else:
            parts = []
            for index in range(first, last + 1):
                base = index * CHUNK_SIZE
                lo = max(offset - base, 0)
                hi = min(end - base, CHUNK_SIZE)
                # Interior chunks are consumed whole: keeping them would flush
                # the footer and index chunks a reader returns to. The edges
                # are what neighbouring (unaligned) reads share.
                plain = self._chunk(index, keep=index in (first, last))
                parts.append(memoryview(plain)[lo:hi])
            data = b"".join(parts)  # one copy of the plaintext, not two
        with self._lock:
            self.reads += 1
        return data

    def _chunk(self, index: int, *, keep: bool) -> bytes:
        """The plaintext of chunk ``index``, from the cache or read and authenticated."""
        with self._lock:
            if self._closed:
                raise Unscannable(_CLOSED)
            cached = self._cache.get(index)
            if cached is not None:
                self._cache.move_to_end(index)
                self.cache_hits += 1
                return cached
            aead = self._aead if self._aead is not None else self._open()
            last = index == self._chunks - 1
            sealed_size = self._size - index * CHUNK_SIZE + TAG_SIZE if last else None
            sealed = self._sealed(
                PAYLOAD_NONCE_SIZE + index * ENCRYPTED_CHUNK_SIZE,
                ENCRYPTED_CHUNK_SIZE if sealed_size is None else sealed_size,
            )
            try:
                plain = aead.decrypt(chunk_nonce(index, last=last), sealed, None)
            except InvalidTag:
                raise Unscannable(_AUTH_FAILED) from None
            self.chunks_decrypted += 1
            if keep:
                self._cache[index] = plain
                if len(self._cache) > self._cache_chunks:
                    self._cache.popitem(last=False)
                self.peak_cached = max(self.peak_cached, len(self._cache))
            return plain

    def _open(self) -> ChaCha20Poly1305:
        """Open the payload (first read, under the lock): check its size, derive the key."""
        if self._wrong_size:
            raise Unscannable(_WRONG_SIZE)
        info = self._info
        expected = PAYLOAD_NONCE_SIZE + self._size + TAG_SIZE * self._chunks
        if info.payload is not None:
            self._memory = memoryview(info.payload)
            actual = len(info.payload)
        else:
            try:
                if self._fd < 0:
                    self._fd = os.open(info.path, os.O_RDONLY | os.O_CLOEXEC)
                actual = os.fstat(self._fd).st_size
            except OSError as exc:
                raise Unscannable(f"spool: cannot be read ({exc.strerror})") from None
        if actual != expected:
            self._wrong_size = True
            raise Unscannable(_WRONG_SIZE)
        nonce = bytes(self._sealed(0, PAYLOAD_NONCE_SIZE))
        self._aead = ChaCha20Poly1305(payload_key(info.file_key, nonce))
        return self._aead

    def _sealed(self, at: int, size: int) -> bytes | memoryview:
        """``size`` bytes of the payload from ``at`` (under the lock)."""
        if self._memory is not None:
            data: bytes | memoryview = self._memory[at : at + size]
        else:
            try:
                data = os.pread(self._fd, size, at)
            except OSError as exc:
                raise Unscannable(f"spool: cannot be read ({exc.strerror})") from None
        if len(data) != size:  # the file shrank after it was opened
            raise Unscannable(_WRONG_SIZE)
        return data

    def close(self) -> None:
        """Close the file and drop the cache; later reads raise (idempotent, thread-safe).

        A read in another thread finishes its current chunk first (the lock),
        so the descriptor is never closed under a ``pread`` and never reused.
        """
        with self._lock:
            self._closed = True
            self._cache.clear()
            self._memory = None
            fd, self._fd = self._fd, -1
            if fd >= 0:
                os.close(fd)

    def __enter__(self) -> SpoolView:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def open_handed(fd: int, params: bytes) -> SpoolView:
    """A reader process's view of a spool handed over (:meth:`SpoolView.handoff`).

    Args:
        fd: the payload file, open for reading (the view owns it).
        params: the plaintext size and the file key, as ``handoff`` packed them.

    Raises:
        Unscannable: ``params`` are not what ``handoff`` packs.
    """
    if len(params) != _HANDED.size + FILE_KEY_SIZE:
        os.close(fd)
        raise Unscannable("spool: handed over without its key")
    (size,) = _HANDED.unpack_from(params)
    chunks = max(1, -(-size // CHUNK_SIZE))
    info = SpoolInfo(
        path=Path(f"/proc/self/fd/{fd}"),
        file_key=params[_HANDED.size :],
        plaintext_bytes=size,
        payload_bytes=PAYLOAD_NONCE_SIZE + size + TAG_SIZE * chunks,
    )
    return SpoolView(info, fd=fd)
