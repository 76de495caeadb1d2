"""The spool view: random access to an encrypted spool, decrypted 64 KiB at a time (issue 12).

Spools here are written by the real :class:`~gateway.server.spool.SpoolWriter`,
in memory and in files; the last tests push a toy footer-indexed format
through both real parks, so the wiring is proven without any real format's reader.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.classify import formats as format_registry
from gateway.classify.formats import Format, register
from gateway.classify.formats.base import AccessFile, Extract, RandomAccess, Unscannable
from gateway.crypto.stream import CHUNK_SIZE, ENCRYPTED_CHUNK_SIZE, PAYLOAD_NONCE_SIZE, TAG_SIZE
from gateway.server import spool_view
from gateway.server.egress_state import EGRESS
from gateway.server.spool import SpoolDir, SpoolInfo
from gateway.server.spool_view import VIEW_CACHE_CHUNKS, SpoolView
from tests.server.conftest import Parks, sha256, stand_in_twin, start_parks

#: Plaintext sizes around the chunk boundaries, and one of several chunks.
SIZES = (0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 5 * CHUNK_SIZE + 123)
KINDS = ("memory", "file")
#: Several chunks, the last one short: what the damage tests cut and flip.
MANY = 5 * CHUNK_SIZE + 4321
#: Pieces the writer is fed in: not a divisor of the chunk size.
WRITE_PIECE = 7000


def seal(root: Path, name: str, data: bytes, kind: str) -> SpoolInfo:
    """``data`` written by the real spool writer, kept in memory or in a file."""
    spool = SpoolDir(root, 0)
    memory_bytes = len(data) + (1 << 20) if kind == "memory" else 0
    writer = spool.new_writer(name, memory_bytes=memory_bytes)
    for i in range(0, len(data), WRITE_PIECE):
        writer.write(data[i : i + WRITE_PIECE])
    info = writer.finish()
    assert (info.payload is not None) == (kind == "memory")
    return info


def payload_of(info: SpoolInfo) -> bytes:
    return info.payload if info.payload is not None else info.path.read_bytes()


def with_payload(info: SpoolInfo, payload: bytes) -> SpoolInfo:
    """The same spool with its payload bytes replaced (in memory, or rewritten on disk)."""
    if info.payload is not None:
        return replace(info, payload=payload)
    info.path.write_bytes(payload)
    return info


def open_fds(path: Path) -> list[str]:
    """This process's descriptors open on ``path``."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor is gone
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                found.append(fd)
    return found


@pytest.fixture(scope="module")
def spools(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[tuple[int, str], tuple[bytes, SpoolInfo]]:
    root = tmp_path_factory.mktemp("spools")
    out = {}
    for size in SIZES:
        data = os.urandom(size)
        for kind in KINDS:
            out[size, kind] = data, seal(root, f"t_{size}_{kind}", data, kind)
    return out


# ------------------------------------------------------------------ handed over


class _Watched(SpoolView):
    """A view that counts the reads the gateway's side answers."""

    def read_at(self, offset: int, length: int) -> bytes:
        self.served = getattr(self, "served", 0) + 1
        return super().read_at(offset, length)


def _read_everything(source: RandomAccess, out: Extract) -> None:
    """A reader process's reader: the whole member back, in uneven reads, and where it came
    from (the process's own view, or the gateway's reads)."""
    text = out.member("all", "text/plain")
    at = 0
    while at < source.size:
        piece = source.read_at(at, 50_000)
        text.write(piece.hex())
        at += len(piece)
    text.close()
    out.attribute("local", str(type(getattr(source, "_source", source)).__name__))


def test_a_spool_file_is_read_by_the_reader_process_itself(tmp_path: Path) -> None:
    """The reader process gets the payload file and the key, decrypts what it reads, and
    the gateway's view answers nothing; a spool kept in memory is read through the
    gateway as before."""
    from gateway.classify.formats import isolation
    from gateway.classify.formats.testing import RecordingExtract

    data = os.urandom(MANY)
    for kind, handed in (("file", True), ("memory", False)):
        info = seal(tmp_path, f"t_handed_{kind}", data, kind)
        with _Watched(info) as view:
            assert (view.handoff() is not None) == handed
            out = RecordingExtract()
            isolation.isolated(_read_everything, view, out, "x")
            assert bytes.fromhex(out.members[0].text) == data
            assert (getattr(view, "served", 0) == 0) == handed
            assert out.attributes["local"] == ("SpoolView" if handed else "_ChildChannel")
        assert info.file_key.hex() not in out.members[0].text


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_damaged_handed_over_spool_fails_in_the_reader_process(
    tmp_path: Path, damage: str
) -> None:
    from gateway.classify.formats import isolation
    from gateway.classify.formats.testing import RecordingExtract

    data = os.urandom(MANY)
    info = seal(tmp_path, "t_handed_damaged", data, "file")
    payload = bytearray(payload_of(info))
    if damage == "flip":
        payload[_chunk_at(3) + 7] ^= 0x01
    else:
        del payload[-5:]
    info = with_payload(info, bytes(payload))
    reason = "chunk failed authentication" if damage == "flip" else "truncated or extended"
    with SpoolView(info) as view, pytest.raises(Unscannable, match=reason):
        isolation.isolated(_read_everything, view, RecordingExtract(), "x")


def _read_slowly_in_a_process(source: RandomAccess, out: Extract) -> None:
    """Reads the handed-over spool a chunk a second (never asks the gateway)."""
    at = 0
    while at < source.size:
        at += len(source.read_at(at, CHUNK_SIZE))
        time.sleep(1)


def test_closing_the_view_stops_a_reader_process_reading_the_spool_itself(
    tmp_path: Path,
) -> None:
    """A time-out or shutdown closes the view: a reader process that reads the spool
    itself never asks the view for a read that would fail, so the gateway sees the view
    closed and stops it, within a fraction of a second."""
    from gateway.classify.formats import isolation
    from gateway.classify.formats.testing import RecordingExtract

    info = seal(tmp_path, "t_cancel", os.urandom(MANY), "file")
    view = SpoolView(info)
    outcome: list[BaseException] = []

    def scan() -> None:
        try:
            isolation.isolated(_read_slowly_in_a_process, view, RecordingExtract(), "x")
        except BaseException as exc:  # looked at below
            outcome.append(exc)

    thread = threading.Thread(target=scan)
    thread.start()
    time.sleep(1.5)
    assert thread.is_alive()  # still reading (6 chunks, one a second)
    closed = time.monotonic()
    view.close()
    thread.join(10)
    assert not thread.is_alive()
    assert time.monotonic() - closed < 2
    assert len(outcome) == 1
    assert isinstance(outcome[0], Unscannable)
    assert "the scan was cancelled" in outcome[0].reason


def test_a_reader_process_s_own_reads_are_counted_by_the_gateway_s_view(
    tmp_path: Path,
) -> None:
    from gateway.classify.formats import isolation
    from gateway.classify.formats.testing import RecordingExtract

    info = seal(tmp_path, "t_counted", os.urandom(MANY), "file")
    with _Watched(info) as view:
        isolation.isolated(_read_everything, view, RecordingExtract(), "x")
        assert getattr(view, "served", 0) == 0
        assert view.chunks_decrypted == -(-MANY // CHUNK_SIZE)  # each chunk once, in order


def test_a_closed_view_hands_nothing_over(tmp_path: Path) -> None:
    info = seal(tmp_path, "t_closed", b"x" * 1000, "file")
    view = SpoolView(info)
    handoff = view.handoff()
    assert handoff is not None
    assert handoff.file == str(info.path)
    view.close()
    assert view.handoff() is None


def test_handed_over_parameters_are_checked(tmp_path: Path) -> None:
    info = seal(tmp_path, "t_params", os.urandom(3000), "file")
    handoff = SpoolView(info).handoff()
    assert handoff is not None
    fd = os.open(info.path, os.O_RDONLY)
    with pytest.raises(Unscannable, match="without its key"):
        spool_view.open_handed(fd, handoff.params[:-1])
    with pytest.raises(OSError, match="Bad file descriptor"):  # open_handed closed it
        os.fstat(fd)
    fd = os.open(info.path, os.O_RDONLY)
    with spool_view.open_handed(fd, handoff.params) as view:
        assert view.read_at(0, 3000) == SpoolView(info).read_at(0, 3000)


# --------------------------------------------------------------------------- reads


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("size", SIZES)
@given(
    reads=st.lists(
        st.tuples(st.integers(0, SIZES[-1] + CHUNK_SIZE), st.integers(0, 3 * CHUNK_SIZE + 1)),
        min_size=1,
        max_size=12,
    ),
    cache_chunks=st.sampled_from([2, 3, VIEW_CACHE_CHUNKS]),
)
def test_reads_equal_the_plaintext_slices(
    spools: dict[tuple[int, str], tuple[bytes, SpoolInfo]],
    size: int,
    kind: str,
    reads: list[tuple[int, int]],
    cache_chunks: int,
) -> None:
    data, info = spools[size, kind]
    with SpoolView(info, cache_chunks=cache_chunks) as view:
        assert view.size == size
        for offset, length in reads:
            # One view for all reads of an example: answers from the cache
            # must equal freshly decrypted ones.
            assert view.read_at(offset, length) == data[offset : offset + length]


@pytest.mark.parametrize("kind", KINDS)
def test_reads_past_the_end_are_short(tmp_path: Path, kind: str) -> None:
    data = os.urandom(MANY)
    with SpoolView(seal(tmp_path, "t_end", data, kind)) as view:
        assert view.read_at(MANY - 3, 10) == data[-3:]
        assert view.read_at(MANY, 10) == b""
        assert view.read_at(MANY + 5 * CHUNK_SIZE, 10) == b""
        assert view.read_at(0, MANY + 1000) == data
        assert view.read_at(7, 0) == b""
        with pytest.raises(Unscannable):
            view.read_at(-1, 5)
        with pytest.raises(Unscannable):
            view.read_at(0, -5)


def test_the_view_is_a_random_access(tmp_path: Path) -> None:
    with SpoolView(seal(tmp_path, "t_proto", b"abc", "file")) as view:
        assert isinstance(view, RandomAccess)


# --------------------------------------------------------------------------- damage


def _chunk_at(index: int) -> int:
    """Offset of sealed chunk ``index`` in the payload."""
    return PAYLOAD_NONCE_SIZE + index * ENCRYPTED_CHUNK_SIZE


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    ("chunk", "where"),
    [(0, 0), (2, 100), (2, ENCRYPTED_CHUNK_SIZE - 1), (5, 3)],
    ids=["first", "middle", "middle-tag", "last"],
)
def test_an_altered_chunk_fails_only_the_reads_that_touch_it(
    tmp_path: Path, kind: str, chunk: int, where: int
) -> None:
    data = os.urandom(MANY)
    info = seal(tmp_path, "t_flip", data, kind)
    payload = bytearray(payload_of(info))
    payload[_chunk_at(chunk) + where] ^= 0x01
    info = with_payload(info, bytes(payload))
    chunks = -(-MANY // CHUNK_SIZE)
    with SpoolView(info) as view:
        for index in range(chunks):
            start = index * CHUNK_SIZE
            if index == chunk:
                with pytest.raises(Unscannable, match="spool: chunk failed authentication"):
                    view.read_at(start + 10, 20)
            else:
                assert view.read_at(start + 10, 20) == data[start + 10 : start + 30]
        # A read spanning it returns nothing, not the bytes before it.
        with pytest.raises(Unscannable, match="failed authentication"):
            view.read_at(max(0, (chunk - 1) * CHUNK_SIZE), 3 * CHUNK_SIZE)
        # Still failing later: nothing of the chunk was cached.
        with pytest.raises(Unscannable):
            view.read_at(chunk * CHUNK_SIZE, 1)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("cut", ["last-chunk", "inside-last-chunk", "one-tag-byte", "extended"])
def test_a_truncated_or_extended_spool_is_unscannable(tmp_path: Path, kind: str, cut: str) -> None:
    data = os.urandom(MANY)
    info = seal(tmp_path, "t_cut", data, kind)
    payload = payload_of(info)
    damaged = {
        "last-chunk": payload[: _chunk_at(5)],
        "inside-last-chunk": payload[: _chunk_at(5) + 100],
        "one-tag-byte": payload[:-1],
        "extended": payload + b"\x00" * TAG_SIZE,
    }[cut]
    with SpoolView(with_payload(info, damaged)) as view:
        for offset in (0, CHUNK_SIZE, MANY - 1):  # every read, not only those near the cut
            with pytest.raises(Unscannable, match="truncated or extended"):
                view.read_at(offset, 1)


@pytest.mark.parametrize("kind", KINDS)
def test_the_last_chunk_must_carry_the_final_flag(tmp_path: Path, kind: str) -> None:
    # A spool cut at a chunk boundary, with sizes that agree with the cut: the
    # size check passes, so only the final flag can tell chunk 1 was not last.
    data = os.urandom(MANY)
    info = seal(tmp_path, "t_flag", data, kind)
    cut = payload_of(info)[: _chunk_at(2)]
    info = with_payload(info, cut)
    info = replace(info, plaintext_bytes=2 * CHUNK_SIZE, payload_bytes=len(cut))
    with SpoolView(info) as view:
        assert view.read_at(0, 10) == data[:10]
        with pytest.raises(Unscannable, match="failed authentication"):
            view.read_at(CHUNK_SIZE, 10)


@pytest.mark.parametrize("kind", KINDS)
def test_an_altered_nonce_or_key_fails_every_read(tmp_path: Path, kind: str) -> None:
    info = seal(tmp_path, "t_nonce", os.urandom(MANY), kind)
    payload = bytearray(payload_of(info))
    payload[3] ^= 0x80
    view = SpoolView(with_payload(info, bytes(payload)))
    with view, pytest.raises(Unscannable, match="failed authentication"):
        view.read_at(0, 1)
    info = seal(tmp_path, "t_key", os.urandom(100), kind)
    view = SpoolView(replace(info, file_key=bytes(16)))
    with view, pytest.raises(Unscannable, match="failed authentication"):
        view.read_at(0, 1)


def test_a_missing_spool_file_is_unscannable(tmp_path: Path) -> None:
    info = seal(tmp_path, "t_gone", b"x" * 100, "file")
    info.path.unlink()
    with SpoolView(info) as view, pytest.raises(Unscannable, match="cannot be read"):
        view.read_at(0, 1)


# --------------------------------------------------------------------------- cache


@pytest.mark.parametrize("bound", [2, 4, VIEW_CACHE_CHUNKS])
def test_the_cache_never_holds_more_than_its_bound(tmp_path: Path, bound: int) -> None:
    chunks = VIEW_CACHE_CHUNKS + 36
    data = os.urandom(chunks * CHUNK_SIZE - 5)
    rng = random.Random(bound)
    with SpoolView(seal(tmp_path, "t_bound", data, "file"), cache_chunks=bound) as view:
        for _ in range(600):
            offset = rng.randrange(len(data))
            length = rng.choice([1, 4096, CHUNK_SIZE, 3 * CHUNK_SIZE])
            assert view.read_at(offset, length) == data[offset : offset + length]
            assert view.cached_chunks <= bound
        assert view.peak_cached == bound  # it did fill up: the bound is what held it


def test_each_chunk_is_decrypted_once_by_a_sequential_scan(tmp_path: Path) -> None:
    # Unaligned reads straddle chunk boundaries; the straddled chunk comes
    # from the cache the second time, so the cost is one decryption per chunk.
    chunks = 20
    data = os.urandom(chunks * CHUNK_SIZE - 77)
    for step in (4103, CHUNK_SIZE - 1, 100_000, 1 << 20):
        with SpoolView(seal(tmp_path, f"t_seq_{step}", data, "file")) as view:
            got = bytearray()
            while len(got) < len(data):
                got += view.read_at(len(got), step)
            assert got == data
            assert view.chunks_decrypted == chunks, step


def test_a_footer_read_again_comes_from_the_cache(tmp_path: Path) -> None:
    # A reader reads the footer, then a large interior range, then the footer
    # again: the interior chunks must not have flushed it.
    chunks = 3 * VIEW_CACHE_CHUNKS
    data = os.urandom(chunks * CHUNK_SIZE - 1000)
    with SpoolView(seal(tmp_path, "t_footer", data, "file")) as view:
        footer = len(data) - 3000
        assert view.read_at(footer, 3000) == data[footer:]
        decrypted = view.chunks_decrypted
        interior = 2 * VIEW_CACHE_CHUNKS * CHUNK_SIZE
        assert view.read_at(CHUNK_SIZE // 2, interior) == data[CHUNK_SIZE // 2 :][:interior]
        assert view.chunks_decrypted == decrypted + 2 * VIEW_CACHE_CHUNKS + 1
        before = view.chunks_decrypted
        assert view.read_at(footer, 3000) == data[footer:]
        assert view.chunks_decrypted == before
        assert view.cache_hits >= 1


def test_a_read_over_the_bound_is_unscannable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool_view, "MAX_READ_BYTES", 2 * CHUNK_SIZE)
    data = os.urandom(MANY)
    with SpoolView(seal(tmp_path, "t_big", data, "file")) as view:
        assert view.read_at(0, 2 * CHUNK_SIZE) == data[: 2 * CHUNK_SIZE]
        with pytest.raises(Unscannable, match="single read"):
            view.read_at(0, 2 * CHUNK_SIZE + 1)
        # Bounded by what exists, not by what was asked for.
        assert view.read_at(MANY - 10, 10 * CHUNK_SIZE) == data[-10:]


# --------------------------------------------------------------------------- descriptors


def test_the_descriptor_is_read_only_and_closed_on_every_path(tmp_path: Path) -> None:
    info = seal(tmp_path, "t_fd", os.urandom(MANY), "file")
    view = SpoolView(info)
    assert open_fds(info.path) == []  # nothing opened before the first read
    view.read_at(0, 1)
    (fd,) = open_fds(info.path)
    flags = (Path("/proc/self/fdinfo") / fd).read_text().split("flags:")[1].split()[0]
    assert int(flags, 8) & os.O_ACCMODE == os.O_RDONLY
    view.read_at(5 * CHUNK_SIZE, 1)
    assert open_fds(info.path) == [fd]  # one descriptor for all reads
    view.close()
    view.close()  # idempotent
    assert open_fds(info.path) == []
    with pytest.raises(Unscannable, match="closed"):
        view.read_at(0, 1)

    def fail_inside() -> None:
        with SpoolView(info) as inside:
            inside.read_at(0, 1)
            raise RuntimeError("a reader failed")

    with pytest.raises(RuntimeError):
        fail_inside()
    assert open_fds(info.path) == []

    cut = replace(info, plaintext_bytes=info.plaintext_bytes + 1)  # size check fails
    with SpoolView(cut) as broken:
        for _ in range(3):  # a failed open is not retried into a second descriptor
            with pytest.raises(Unscannable):
                broken.read_at(0, 1)
        assert len(open_fds(info.path)) <= 1
    assert open_fds(info.path) == []


def test_reading_writes_nothing(tmp_path: Path) -> None:
    info = seal(tmp_path, "t_ro", os.urandom(MANY), "file")
    listing = sorted(p.name for p in tmp_path.rglob("*"))
    digest = hashlib.sha256(info.path.read_bytes()).hexdigest()
    mtime = info.path.stat().st_mtime_ns
    with SpoolView(info) as view:
        view.read_at(0, MANY)
    assert sorted(p.name for p in tmp_path.rglob("*")) == listing
    assert hashlib.sha256(info.path.read_bytes()).hexdigest() == digest
    assert info.path.stat().st_mtime_ns == mtime


@pytest.mark.parametrize("kind", KINDS)
def test_concurrent_reads_from_many_threads(tmp_path: Path, kind: str) -> None:
    data = os.urandom(12 * CHUNK_SIZE + 9)
    errors: list[BaseException] = []
    with SpoolView(seal(tmp_path, "t_threads", data, kind), cache_chunks=3) as view:

        def reader(seed: int) -> None:
            rng = random.Random(seed)
            try:
                for _ in range(300):
                    offset = rng.randrange(len(data))
                    length = rng.randrange(1, 2 * CHUNK_SIZE)
                    assert view.read_at(offset, length) == data[offset : offset + length]
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=reader, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert view.cached_chunks <= 3
    assert errors == []


# --------------------------------------------------------------------------- a real library


@pytest.mark.parametrize("kind", KINDS)
def test_pyarrow_reads_parquet_through_the_view(tmp_path: Path, kind: str) -> None:
    rows = 40_000 if kind == "file" else 500  # a memory spool is a small body
    table = pa.table(
        {
            "id": pa.array(range(rows), pa.int64()),
            "name": pa.array([f"sample-{i:06d}" for i in range(rows)]),
            "value": pa.array([i / 7 for i in range(rows)], pa.float64()),
        }
    )
    sink = io.BytesIO()
    pq.write_table(table, sink, row_group_size=max(1, rows // 4))
    data = sink.getvalue()
    with SpoolView(seal(tmp_path, "t_parquet", data, kind)) as view:
        parquet = pq.ParquetFile(AccessFile(view))
        assert parquet.metadata.num_rows == rows
        assert parquet.read().equals(table)
        quarter = rows // 4
        group = parquet.read_row_group(2, columns=["name"])
        assert group.equals(table.select(["name"]).slice(2 * quarter, quarter))
        assert view.chunks_decrypted >= 1


# --------------------------------------------------------------------------- through the parks

#: Magic numbers of the toy formats (never the start of a real format).
TOY_MAGIC = b"HKSZ-TOY-FOOTER\x00"
SLOW_MAGIC = b"HKSZ-TOY-SLOWLY\x00"
TOY_END = b"TOYEND!!"
#: A valid Mainland resident ID (GB 11643 check character).
RESIDENT_ID = "440305198412252041"
#: Bytes sealed above the 0x7f line: no ASCII digit or letter, whatever a
#: decoder would do with raw bytes, so only the toy reader can see a value.
_HIGH = bytes(i | 0x80 for i in range(256))

#: What the toy readers were given, in order (the parks run in this process).
sources: list[str] = []
#: Set when the slow toy reader stopped because its view was closed.
slow_reader_stopped = threading.Event()


def toy_file(footer: str, size: int) -> bytes:
    """A toy footer-indexed file: magic, filler, the footer text (hidden), its length, end mark."""
    hidden = footer.encode().translate(_HIGH)
    filler = random.Random(size).randbytes(size - len(TOY_MAGIC) - len(hidden) - 12)
    tail = hidden + len(hidden).to_bytes(4, "little") + TOY_END
    return TOY_MAGIC + filler.translate(_HIGH) + tail


def _read_toy(source: RandomAccess, out: Extract) -> None:
    """The toy reader: the footer at the end, through ``read_at`` only."""
    sources.append(type(source).__name__)
    tail = source.read_at(source.size - 12, 12)
    if len(tail) != 12 or tail[4:] != TOY_END:
        raise Unscannable("toy: no footer")
    length = int.from_bytes(tail[:4], "little")
    hidden = source.read_at(source.size - 12 - length, length)
    member = out.member("footer", "text/plain")
    member.write(bytes(b & 0x7F for b in hidden).decode())
    member.close()


#: How long the slow toy reader takes to stop once its view is closed: the
#: transfer must wait for it (no thread may outlive the scanner it drives).
SLOW_STOP_SECONDS = 0.3


def _read_slowly(source: RandomAccess, out: Extract) -> None:
    """A reader that never ends on its own: it reads until its source is closed."""
    try:
        while True:
            source.read_at(0, 1)
            time.sleep(0.01)
    except Unscannable:
        time.sleep(SLOW_STOP_SECONDS)
        slow_reader_stopped.set()
        raise


def _is_toy(prefix: bytes) -> bool:
    return prefix.startswith(TOY_MAGIC)


def _is_slow_toy(prefix: bytes) -> bool:
    return prefix.startswith(SLOW_MAGIC)


@pytest.fixture
def toy_formats() -> Iterator[None]:
    """The toy formats, registered for one test (the registry is the decoder's)."""
    added = [
        register(Format("hksz-toy-footer", "application/x-hksz-toy", _is_toy, random=_read_toy)),
        register(
            Format("hksz-toy-slow", "application/x-hksz-toy", _is_slow_toy, random=_read_slowly)
        ),
    ]
    sources.clear()
    slow_reader_stopped.clear()
    try:
        yield
    finally:
        for fmt in added:
            with contextlib.suppress(KeyError):
                format_registry.unregister(fmt.name)


def _chunks_read(parks: Parks) -> float:
    assert parks.hk.egress_app is not None
    metrics = parks.hk.egress_app[EGRESS].services.metrics
    value = metrics.registry.get_sample_value(
        "gateway_spool_view_chunks_total", {"result": "decrypted"}
    )
    return value or 0.0


#: Small: the spool stays in memory. Large: a spool file, and past 256 KiB
#: on an envelope route the payload streams to the twin while classified.
TOY_SIZES = {"memory-spool": 20_000, "file-spool-pipelined": 3 * (1 << 20) + 5}


@pytest.mark.parametrize("size", TOY_SIZES.values(), ids=TOY_SIZES.keys())
async def test_a_footer_read_through_the_spool_view_decides(
    parks: Parks, toy_formats: None, size: int
) -> None:
    dirty = toy_file(f"owner,{RESIDENT_ID}\n", size)
    assert RESIDENT_ID.encode() not in dirty  # only the reader can see it
    read_before = _chunks_read(parks)
    status, body = await parks.put("sz-lab", "table.toy", dirty)
    assert status == 403, body
    assert body["rule"] == "block.personal"
    assert body["labels"]["pii.cn_resident_id"]["count"] == 1
    assert sources == ["SpoolView"]
    assert _chunks_read(parks) > read_before
    assert parks.inbox_files("sz-lab") == {}
    assert parks.events_of(body["transfer_id"], "sz") == []

    clean = toy_file("owner,nobody\n", size)
    status, body = await parks.put("sz-lab", "clean.toy", clean)
    assert status == 201, body
    assert body["labels"] == {}
    assert body["sha256"] == sha256(clean)
    assert sources == ["SpoolView", "SpoolView"]
    assert parks.inbox_files("sz-lab") == {"clean.toy": clean}
    assert [p for p in (parks.root / "hk" / "spool").rglob("*") if p.is_file()] == []


async def test_a_large_footer_indexed_file_still_goes_pipelined(
    parks: Parks, toy_formats: None
) -> None:
    # The payload went to the twin while the body arrived; the header (all the
    # envelope POST carries then) only after the footer was read and allowed.
    clean = toy_file("owner,nobody\n", TOY_SIZES["file-spool-pipelined"])
    async with stand_in_twin(parks, stall_payloads=False) as twin:
        status, body = await parks.put("sz-lab", "clean.toy", clean)
    assert status == 201, body
    assert sources == ["SpoolView"]
    assert twin.payload_puts == 1
    (envelope,) = twin.envelopes.values()
    assert len(envelope) < 1024  # the age header only: the payload went ahead


async def test_the_total_timeout_ends_a_reader_on_the_spool(
    tmp_path: Path, pki: Path, toy_formats: None
) -> None:
    data = SLOW_MAGIC + bytes(500_000)
    async with start_parks(tmp_path, pki, egress={"total_timeout": 2}) as parks:
        started = time.monotonic()
        status, body = await parks.put("sz-lab", "slow.toy", data)
        assert status == 503, body
        assert time.monotonic() - started < 10
        # The view was closed, so the reader's next read ended it, and the
        # transfer waited for that before answering: no thread outlives it.
        assert slow_reader_stopped.is_set()
        state = parks.hk.egress_app[EGRESS]  # type: ignore[index]
        assert state.inflight == 0
        assert parks.events_of(body["transfer_id"]) == ["aborted"]
        assert parks.inbox_files("sz-lab") == {}
        assert [p for p in (parks.root / "hk" / "spool").rglob("*") if p.is_file()] == []
