"""The encrypted spool: a transfer's body at rest is an age payload, never plaintext.

While a body is received and classified it is written to disk as the payload
of an age file (C2SP age, "Payload": a 16-byte nonce, then 64 KiB
ChaCha20-Poly1305 STREAM chunks) under a fresh per-transfer file key that lives
only in this process's memory. Nothing about the recipient is decided yet:

- on allow with ``encrypt: envelope`` the gateway writes an age header for the
  route's recipient around the *same* file key and sends header + spooled
  payload to the twin: one encryption pass, and the recipient gets a standard
  age file;
- on allow with ``encrypt: tls`` it decrypts the spool and streams plaintext
  over mutual TLS;
- a transfer held for review gets a header to the gateway's *own* spool
  recipient written beside it (``held/``), so the held spool survives a restart
  and stays ciphertext at rest; approval unwraps the file key with the spool
  identity. Its metadata (route, sender, the file name, the scan summary and
  keyed hashes) is an age file to the same recipient (``.meta.age``): a name
  such as ``scan_11010519491231002X.csv`` is a matched value, and a review may
  stay open for days (SPEC §3.2).

A small payload (up to the writer's ``memory_bytes``) stays in memory and
no file is created unless it grows past that: creating and deleting a file
costs two journal transactions (~0.35 ms measured on ext4, more while a
concurrent fsync commits), a large share of a 1 KB transfer's latency. It is
ciphertext under the same per-transfer key, so nothing changes at rest; a held
review writes it to ``held/`` like any other spool.

Spools are deleted when their transfer ends, and at start-up every spool that
is not a held review is swept (a crash left it; its key died with the process,
so it is unreadable anyway).

Everything here is blocking file I/O; the server calls it from worker threads
(a writer that has not spilled to its file does no I/O).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from gateway.crypto.age import AgeDecryptor, AgeEncryptor
from gateway.crypto.header import FILE_KEY_SIZE
from gateway.crypto.keys import Recipient, X25519Identity
from gateway.crypto.stream import PAYLOAD_NONCE_SIZE, StreamDecryptor, StreamEncryptor
from gateway.errors import Unavailable

#: Bytes read from a spool per step when forwarding: 16 full age chunks, large
#: enough that per-read overhead vanishes, small enough to keep RSS flat.
READ_SIZE = 16 * (64 * 1024 + 16)
#: Write buffer of a spool file; a few STREAM chunks per write(2).
WRITE_BUFFER = 1024 * 1024
_PAYLOAD_SUFFIX = ".payload"
_HEADER_SUFFIX = ".header"
#: A held review's metadata: JSON, sealed in an age file to the spool recipient.
_META_SUFFIX = ".meta.age"
#: Plaintext metadata held by versions before it was encrypted: still restored,
#: then rewritten as :data:`_META_SUFFIX` and deleted (:meth:`SpoolDir.held_parts`).
_LEGACY_META_SUFFIX = ".json"
#: What :func:`_write_durable` writes before renaming into place; a crash may
#: leave one, which is never part of a held review (and may hold plaintext
#: metadata of an older version), so :meth:`SpoolDir.sweep` deletes it.
_TMP_SUFFIX = ".tmp"
_HELD_DIR = "held"


class SpoolFull(Unavailable):
    """The spool disk is (nearly) full: refuse, never forward (fail closed)."""

    slug = "spool-full"
    title = "Spool disk full"


@dataclass(frozen=True, slots=True)
class SpoolInfo:
    """A finished spool.

    Attributes:
        path: the payload file (not created when ``payload`` holds the payload).
        file_key: the 16-byte age file key (memory only).
        plaintext_bytes: bytes of plaintext sealed.
        payload_bytes: bytes of the age payload (nonce + chunks).
        payload: the whole age payload when it was small enough to stay in
            memory; ``None`` when it is in the file at ``path``.
    """

    path: Path
    file_key: bytes
    plaintext_bytes: int
    payload_bytes: int
    payload: bytes | None = None

    def payload_blocks(self) -> Iterator[bytes]:
        """The age payload (nonce + chunks), from memory or in :data:`READ_SIZE` file pieces."""
        if self.payload is not None:
            return iter((self.payload,))
        return iter_payload(self.path)

    def plaintext_blocks(self) -> Iterator[bytes]:
        """Decrypt the spool, yielding only verified plaintext.

        Raises:
            gateway.crypto.errors.PayloadError: the spool was altered.
        """
        return _decrypt_blocks(self.payload_blocks(), self.file_key)


class SpoolWriter:
    """Seal a body into an age payload as it arrives.

    Args:
        path: the payload file to create (must not exist).
        memory_bytes: keep the payload in memory while it is at most this
            many bytes, and create ``path`` only when it grows past them
            (then in whichever thread is writing). 0 creates the file at once.

    Raises:
        OSError: the file could not be created (only when ``memory_bytes`` is 0).
    """

    def __init__(self, path: Path, *, memory_bytes: int = 0) -> None:
        self.path = path
        self._file_key = os.urandom(FILE_KEY_SIZE)
        #: The per-transfer age file key (memory only; never written anywhere).
        self.file_key = self._file_key
        nonce = os.urandom(PAYLOAD_NONCE_SIZE)
        self._encryptor = StreamEncryptor(self._file_key, nonce)
        #: The payload nonce (the first bytes of the payload, already written).
        self.nonce = nonce
        #: The sealed final chunk, once :meth:`finish` ran.
        self.last_sealed = b""
        self._memory_bytes = memory_bytes
        # The payload so far while it fits in memory_bytes; None once in the file.
        self._memory: bytearray | None = bytearray() if memory_bytes > 0 else None
        self._file: BinaryIO | None = None
        self._plaintext = 0
        self._payload = 0
        self._closed = False
        if self._memory is None:
            self._file = self._create()
        self._write(nonce)

    def _create(self) -> BinaryIO:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        return os.fdopen(fd, "wb", buffering=WRITE_BUFFER)

    def _write(self, data: bytes) -> None:
        if self._memory is not None:
            if len(self._memory) + len(data) <= self._memory_bytes:
                self._memory += data
                self._payload += len(data)
                return
            self._spill()
        self._to_file(data)
        self._payload += len(data)

    def _spill(self) -> None:
        """The payload outgrew memory: it moves to a new file (already counted)."""
        try:
            self._file = self._create()
        except OSError as exc:
            raise _spool_error(exc) from None
        held, self._memory = self._memory, None
        if held:
            self._to_file(bytes(held))

    def _to_file(self, data: bytes) -> None:
        assert self._file is not None
        try:
            self._file.write(data)
        except OSError as exc:
            raise _spool_error(exc) from None

    def write(self, data: bytes) -> bytes:
        """Seal ``data``, write the chunks known to be non-final, and return them.

        Raises:
            SpoolFull: the disk or a file-size limit refused the write.
            Unavailable: the spool file could not be created.
        """
        self._plaintext += len(data)
        sealed = self._encryptor.update(data)
        if sealed:
            self._write(sealed)
        return sealed

    def finish(self) -> SpoolInfo:
        """Seal the final chunk and close the file (if the payload has one).

        Raises:
            SpoolFull: the disk refused the last write.
        """
        self.last_sealed = self._encryptor.finish()
        self._write(self.last_sealed)
        if self._memory is not None:
            self._closed = True
            return SpoolInfo(
                self.path, self._file_key, self._plaintext, self._payload, bytes(self._memory)
            )
        assert self._file is not None
        try:
            self._file.close()
        except OSError as exc:
            raise _spool_error(exc) from None
        finally:
            self._closed = True
        return SpoolInfo(self.path, self._file_key, self._plaintext, self._payload)

    def discard(self) -> None:
        """Close and delete the file (abort, block, failure); never raises."""
        self._memory = None
        if not self._closed:
            self._closed = True
            if self._file is not None:
                with contextlib.suppress(OSError):
                    self._file.close()
        if self._file is not None:  # never delete a file this writer did not create
            with contextlib.suppress(OSError):
                self.path.unlink()


def _spool_error(exc: OSError) -> Unavailable:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return SpoolFull("the spool disk is full; the transfer was not forwarded")
    return Unavailable(f"cannot write the spool ({exc.strerror}); the transfer was not forwarded")


def iter_payload(path: Path) -> Iterator[bytes]:
    """The spooled age payload (nonce + chunks), in :data:`READ_SIZE` pieces."""
    with path.open("rb") as f:
        while True:
            block = f.read(READ_SIZE)
            if not block:
                return
            yield block


def iter_plaintext(path: Path, file_key: bytes) -> Iterator[bytes]:
    """Decrypt a spool file, yielding only verified plaintext.

    Raises:
        gateway.crypto.errors.PayloadError: the spool was altered on disk.
    """
    return _decrypt_blocks(iter_payload(path), file_key)


def _decrypt_blocks(blocks: Iterator[bytes], file_key: bytes) -> Iterator[bytes]:
    head = b""
    for block in blocks:
        head += block
        if len(head) >= PAYLOAD_NONCE_SIZE:
            break
    decryptor = StreamDecryptor(file_key, head[:PAYLOAD_NONCE_SIZE])
    first = decryptor.feed(head[PAYLOAD_NONCE_SIZE:])
    if first:
        yield first
    for block in blocks:
        plain = decryptor.feed(block)
        if plain:
            yield plain
    last = decryptor.finish()
    if last:
        yield last


class SpoolDir:
    """The spool directory: transient spools at the top, held reviews under ``held/``.

    Replicas of a park keep their held reviews on a shared volume instead
    (``held_root``), each in its own subdirectory: any replica then finds a
    review another one held (:meth:`locate`) and may decide it.

    Args:
        root: the directory (created mode 0700 when missing).
        min_free_bytes: refuse new spools below this much free space.
        held_root: the park's shared directory of held reviews, if any.
        instance: this replica's name: its subdirectory of ``held_root``.
    """

    def __init__(
        self,
        root: Path,
        min_free_bytes: int,
        *,
        held_root: Path | None = None,
        instance: str = "",
    ) -> None:
        self.root = root
        self.held_root = held_root
        self.held = root / _HELD_DIR if held_root is None else held_root / instance
        self.min_free_bytes = min_free_bytes
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.held.mkdir(parents=True, exist_ok=True, mode=0o700)

    def sweep(self) -> int:
        """Delete every transient spool a previous process left; return how many."""
        removed = 0
        for entry in self.root.iterdir():
            if entry.is_file():
                with contextlib.suppress(OSError):
                    entry.unlink()
                    removed += 1
        for entry in self.held.iterdir():
            # A held review is complete only with its header and metadata.
            stem = entry.name.split(".", 1)[0]
            if entry.name.endswith(_TMP_SUFFIX) or not self.is_held(stem):
                with contextlib.suppress(OSError):
                    entry.unlink()
                    removed += 1
        return removed

    def check_space(self) -> None:
        """Fail closed when the spool filesystem is low on space.

        Raises:
            SpoolFull: fewer than ``min_free_bytes`` free.
        """
        if self.min_free_bytes and shutil.disk_usage(self.root).free < self.min_free_bytes:
            raise SpoolFull("the spool disk is low on space; try again later")

    def new_writer(self, transfer_id: str, *, memory_bytes: int = 0) -> SpoolWriter:
        """Create the spool of a new transfer.

        Args:
            transfer_id: names the payload file.
            memory_bytes: see :class:`SpoolWriter`; with a positive value
                nothing touches the disk here.

        Raises:
            SpoolFull: the disk is full.
            Unavailable: the file could not be created.
        """
        try:
            return SpoolWriter(
                self.root / (transfer_id + _PAYLOAD_SUFFIX), memory_bytes=memory_bytes
            )
        except OSError as exc:
            raise _spool_error(exc) from None

    def hold(
        self, info: SpoolInfo, header: bytes, meta: dict[str, Any], recipient: Recipient
    ) -> SpoolInfo:
        """Keep a spool for review: header to the spool key and metadata beside it.

        The payload is renamed into ``held/`` last, after its header and
        metadata are durable, so a crash never leaves a held payload that the
        spool key cannot open. A payload kept in memory is written there
        (synced, then renamed) the same way; the returned info names the file.

        Args:
            info: the finished spool.
            header: the age header wrapping its file key to ``recipient``.
            meta: what restoring the review needs (JSON-serialisable).
            recipient: the gateway's own spool recipient; the metadata is
                sealed to it, never written in clear.
        """
        stem = info.path.name[: -len(_PAYLOAD_SUFFIX)]
        _write_durable(self.held / (stem + _HEADER_SUFFIX), header)
        _write_durable(self.held / (stem + _META_SUFFIX), _seal_meta(meta, recipient))
        target = self.held / info.path.name
        if info.payload is not None:
            _write_durable(target, info.payload)
        else:
            with info.path.open("rb") as f:
                os.fsync(f.fileno())
            try:
                os.replace(info.path, target)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                # The shared held directory is another mount than the spool.
                _copy_durable(info.path, target)
                info.path.unlink()
        _fsync_dir(self.held)
        return SpoolInfo(target, info.file_key, info.plaintext_bytes, info.payload_bytes)

    def is_held(self, transfer_id: str) -> bool:
        """Whether a complete held review of this gateway exists for ``transfer_id``."""
        return _complete(self.held, transfer_id)

    def locate(self, transfer_id: str) -> Path | None:
        """The directory holding a complete held review of ``transfer_id``: this
        gateway's own, or another replica's under the shared ``held_root``."""
        if _TRANSFER_FILE.fullmatch(transfer_id) is None:
            return None
        if _complete(self.held, transfer_id):
            return self.held
        if self.held_root is None:
            return None
        with contextlib.suppress(OSError):
            for directory in sorted(self.held_root.iterdir()):
                if directory.is_dir() and _complete(directory, transfer_id):
                    return directory
        return None

    def held_ids(self) -> list[str]:
        """Transfer ids of complete held reviews (for restoring after a restart)."""
        found = {
            p.name[: -len(suffix)]
            for suffix in (_META_SUFFIX, _LEGACY_META_SUFFIX)
            for p in self.held.glob("*" + suffix)
        }
        return sorted(transfer_id for transfer_id in found if self.is_held(transfer_id))

    def held_parts(
        self, transfer_id: str, identity: X25519Identity
    ) -> tuple[Path, bytes, dict[str, Any]]:
        """Payload path, header bytes and metadata of a held review.

        Metadata held in clear by an older version is sealed to the spool
        key on this first read (written durably, then the plaintext file is
        deleted), so no name stays in clear past the restart that restores it.

        Args:
            transfer_id: the held review.
            identity: the gateway's own spool identity (opens the metadata).

        Raises:
            OSError: a file is missing or unreadable.
            gateway.crypto.errors.AgeError: the metadata is not sealed to
                ``identity``, or was altered.
        """
        held = self.locate(transfer_id) or self.held
        header = (held / (transfer_id + _HEADER_SUFFIX)).read_bytes()
        sealed = held / (transfer_id + _META_SUFFIX)
        legacy = held / (transfer_id + _LEGACY_META_SUFFIX)
        if sealed.is_file():
            meta = _open_meta(sealed.read_bytes(), identity)
            if legacy.exists():  # a crash came between sealing and deleting it
                legacy.unlink()
                _fsync_dir(held)
        else:
            meta = json.loads(legacy.read_text("utf-8"))
            _write_durable(sealed, _seal_meta(meta, identity.recipient))
            legacy.unlink()
            _fsync_dir(held)
        return held / (transfer_id + _PAYLOAD_SUFFIX), header, meta

    def release(self, transfer_id: str, held_in: Path | None = None) -> None:
        """Delete every file of ``transfer_id``: transient, held here, and held in
        ``held_in`` (another replica's directory, :meth:`locate`); never raises.

        Nothing is searched: a transfer's end releases its spool, and looking
        through every replica's directory there would cost each transfer I/O.
        """
        directories = [self.root, self.held]
        if held_in is not None and held_in not in directories:
            directories.append(held_in)
        for directory in directories:
            # The payload first: without it the rest is no held review any more.
            for suffix in (_PAYLOAD_SUFFIX, _HEADER_SUFFIX, _META_SUFFIX, _LEGACY_META_SUFFIX):
                with contextlib.suppress(OSError):
                    (directory / (transfer_id + suffix)).unlink()


#: What a transfer id may look like in a file name (nothing that walks paths).
_TRANSFER_FILE = re.compile(r"t_[A-Za-z0-9_]{1,64}")


def _complete(directory: Path, transfer_id: str) -> bool:
    """Whether ``directory`` holds the payload, header and metadata of a held review."""

    def has(suffix: str) -> bool:
        return (directory / (transfer_id + suffix)).is_file()

    return (
        has(_PAYLOAD_SUFFIX)
        and has(_HEADER_SUFFIX)
        and (has(_META_SUFFIX) or has(_LEGACY_META_SUFFIX))
    )


def _copy_durable(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` through a synced temporary file."""
    tmp = target.with_name(target.name + _TMP_SUFFIX)
    with source.open("rb") as src:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as dst:
            shutil.copyfileobj(src, dst, READ_SIZE)
            dst.flush()
            os.fsync(dst.fileno())
    os.replace(tmp, target)


def _seal_meta(meta: dict[str, Any], recipient: Recipient) -> bytes:
    """A held review's metadata as one age file to ``recipient`` (a fresh file key)."""
    encryptor = AgeEncryptor([recipient])
    plain = json.dumps(meta).encode()
    return encryptor.header() + encryptor.update(plain) + encryptor.finish()


def _open_meta(sealed: bytes, identity: X25519Identity) -> dict[str, Any]:
    """The metadata sealed by :func:`_seal_meta`; only verified plaintext is parsed.

    Raises:
        gateway.crypto.errors.AgeError: not sealed to ``identity``, or altered.
    """
    decryptor = AgeDecryptor([identity])
    plain = decryptor.feed(sealed) + decryptor.finish()
    meta: dict[str, Any] = json.loads(plain)
    return meta


def _write_durable(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + _TMP_SUFFIX)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
