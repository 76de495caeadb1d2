"""Reader processes (gateway/classify/formats/isolation.py): a C library reads hostile
files in a process forked from a zygote, never in the gateway's own."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gateway.classify.formats import isolation
from gateway.classify.formats.base import BytesAccess, Handoff, Unscannable, read_ranges
from gateway.classify.formats.files import FileAccess
from gateway.classify.formats.testing import RecordingExtract


def _reports(source: BytesAccess, out: RecordingExtract) -> None:
    member = out.member("dataset /x", "text/csv")
    member.write("/x\n")
    member.write("张三," + source.read_at(2, 3).decode() + "\n")  # read back through the pipes
    member.close()
    nested = out.nested("dataset /blob")
    nested.write(b"\x00\xff")
    nested.close()
    out.numeric(7)
    out.attribute("organism", "Homo sapiens")
    out.finding("sensitive.health", b"patient")


def test_reader_reports_are_replayed() -> None:
    out = RecordingExtract()
    isolation.isolated(_reports, BytesAccess(b"0123456789"), out, "x")  # type: ignore[arg-type]
    assert [(m.name, m.content_type, m.text, m.closed) for m in out.members] == [
        ("dataset /x", "text/csv", "/x\n张三,234\n", True)
    ]
    assert [(n.name, bytes(n.data), n.closed) for n in out.nested_members] == [
        ("dataset /blob", b"\x00\xff", True)
    ]
    assert out.numeric_values == 7
    assert out.attributes == {"organism": "Homo sapiens"}
    assert out.findings == [("sensitive.health", b"patient")]


def _echo_large(source: BytesAccess, out: RecordingExtract) -> None:
    """Text far over one frame, and the whole source read back through the pipes."""
    member = out.member("big", "text/plain")
    member.write("测" * (3 << 20) + "\n")
    member.write(source.read_at(0, source.size).decode())
    member.close()
    nested = out.nested("blob")
    nested.write(bytes(range(256)) * (100 << 10))  # 25 MiB: over one frame
    nested.close()


def test_large_text_and_reads_cross_intact() -> None:
    payload = "".join(f"{i:08d}," for i in range(400_000))  # 3.6 MB: many 64 KiB windows
    out = RecordingExtract()
    isolation.isolated(_echo_large, BytesAccess(payload.encode()), out, "x")  # type: ignore[arg-type]
    assert out.members[0].text == "测" * (3 << 20) + "\n" + payload
    assert bytes(out.nested_members[0].data) == bytes(range(256)) * (100 << 10)


class _CountingAccess(BytesAccess):
    """A source that counts the bytes the read server hands the reader process."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.served = 0
        self.requests = 0

    def read_at(self, offset: int, length: int) -> bytes:
        got = super().read_at(offset, length)
        self.served += len(got)
        self.requests += 1
        return got


def _walk(source: BytesAccess, out: RecordingExtract) -> None:
    """Headers read as a footer walk reads them: a kilobyte at each of ``stride``-spaced pages."""
    member = out.member("walk", "text/plain")
    stride = int(source.read_at(0, 8))
    for offset in range(8, source.size - 1024, stride):
        member.write(source.read_at(offset, 1024)[:4].decode() + ",")
    member.close()


@pytest.mark.parametrize(
    ("stride", "most_served", "most_requests"),
    [(160 << 10, 210 * (4 << 10), 210), (4096, 34 << 20, 60)],
)
def test_a_walk_reads_what_it_needs(stride: int, most_served: int, most_requests: int) -> None:
    """Pages 160 KiB apart cost a small window each, not a megabyte; close pages share
    growing windows (few round trips); every header read is right."""
    body = bytearray(32 << 20)
    pages = range(8, len(body) - 1024, stride)
    for n, offset in enumerate(pages):
        body[offset : offset + 4] = b"%04d" % (n % 10_000)
    body[:8] = b"%08d" % stride
    source = _CountingAccess(bytes(body))
    out = RecordingExtract()
    isolation.isolated(_walk, source, out, "x")  # type: ignore[arg-type]
    assert out.members[0].text == "".join(f"{n % 10_000:04d}," for n in range(len(pages)))
    assert source.served <= most_served
    assert source.requests <= most_requests


def _busy(source: object, out: object) -> None:
    started = time.process_time()
    while time.process_time() - started < 0.2:
        pass


def test_reader_processes_report_their_cpu() -> None:
    before = isolation.reader_cpu_seconds()
    isolation.isolated(_busy, BytesAccess(b"x"), RecordingExtract(), "x")  # type: ignore[arg-type]
    used = isolation.reader_cpu_seconds() - before
    assert 0.15 <= used < 5
    for garbled in (b"", b"nan 0 0", b"-1 0 0", b"inf 0 0", b"x", b"1 -2 3", b"1 2", b"1 2 3 4"):
        assert isolation._done(garbled) == (0, 0)
    assert isolation.reader_cpu_seconds() == before + used
    assert isolation._done(b"0 3 4") == (3, 4)


def _crash(source: object, out: object) -> None:
    import ctypes

    ctypes.string_at(0)  # a segmentation fault, as a hostile file can cause in a C library


def _hog(source: object, out: object) -> None:
    hoard = [bytearray(64 << 20) for _ in range(64)]  # 4 GiB
    assert hoard


def _spin(source: object, out: object) -> None:
    time.sleep(30)


def _refuse(source: object, out: object) -> None:
    raise Unscannable("x: refused")


def test_reader_failures_are_unscannable(monkeypatch: pytest.MonkeyPatch) -> None:
    source = BytesAccess(b"data")
    with pytest.raises(Unscannable, match=r"^x: reader process failed$"):
        isolation.isolated(_crash, source, RecordingExtract(), "x")
    with pytest.raises(Unscannable, match=r"^x: reader process out of memory$"):
        isolation.isolated(_hog, source, RecordingExtract(), "x")
    with pytest.raises(Unscannable, match=r"^x: refused$"):
        isolation.isolated(_refuse, source, RecordingExtract(), "x")
    monkeypatch.setattr(isolation, "ISOLATED_TIMEOUT_SECONDS", 0.5)
    started = time.monotonic()
    with pytest.raises(Unscannable, match=r"^x: reader process took too long$"):
        isolation.isolated(_spin, source, RecordingExtract(), "x")
    assert time.monotonic() - started < 10
    # The zygote survived all of it: the next member is read.
    out = RecordingExtract()
    isolation.isolated(_reports, BytesAccess(b"0123456789"), out, "x")  # type: ignore[arg-type]
    assert out.numeric_values == 7


def _child_pid(source: BytesAccess, out: RecordingExtract) -> None:
    member = out.member("pid", "text/plain")
    member.write(f"{os.getpid()} {os.getppid()}")
    member.close()
    time.sleep(float(source.read_at(0, source.size).decode()))


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split()[2] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone before the open, or before the read
        return False


def test_a_killed_reader_process_is_gone_and_the_member_unscannable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past its time the reader process is killed, not left behind."""
    monkeypatch.setattr(isolation, "ISOLATED_TIMEOUT_SECONDS", 1.0)
    out = RecordingExtract()
    with pytest.raises(Unscannable, match="took too long"):
        isolation.isolated(_child_pid, BytesAccess(b"30"), out, "x")  # type: ignore[arg-type]
    pid, parent = map(int, out.members[0].text.split())
    assert parent == isolation.zygote_pid() != os.getpid()
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)


def _load_marker() -> None:
    sys.modules.setdefault("gateway_isolation_marker", type(sys)("gateway_isolation_marker"))


def _has_marker(source: BytesAccess, out: RecordingExtract) -> None:
    member = out.member("marker", "text/plain")
    member.write(str("gateway_isolation_marker" in sys.modules))
    member.close()


def test_prepare_runs_in_the_zygote_not_here() -> None:
    out = RecordingExtract()
    isolation.isolated(_has_marker, BytesAccess(b"x"), out, "x", prepare=_load_marker)  # type: ignore[arg-type]
    assert out.members[0].text == "True"
    assert "gateway_isolation_marker" not in sys.modules


def test_only_module_level_readers() -> None:
    def local(source: object, out: object) -> None:
        """Not importable by name."""

    with pytest.raises(TypeError, match="module-level"):
        isolation.isolated(local, BytesAccess(b"x"), RecordingExtract(), "x")


def test_a_dead_zygote_is_restarted() -> None:
    isolation.isolated(_reports, BytesAccess(b"0123456789"), RecordingExtract(), "x")  # type: ignore[arg-type]
    first = isolation.zygote_pid()
    assert first is not None
    os.kill(first, signal.SIGKILL)
    out = RecordingExtract()
    isolation.isolated(_reports, BytesAccess(b"0123456789"), out, "x")  # type: ignore[arg-type]
    assert out.numeric_values == 7
    assert isolation.zygote_pid() not in (None, first)


def _linger(source: object, out: object) -> None:
    time.sleep(3)


def test_the_reader_process_holds_no_inherited_socket() -> None:
    """A connection the gateway closes must close while a reader process runs."""
    ours, peer = socket.socketpair()
    peer.settimeout(5)
    done = threading.Event()

    def run() -> None:
        isolation.isolated(_linger, BytesAccess(b"data"), RecordingExtract(), "x")  # type: ignore[arg-type]
        done.set()

    worker = threading.Thread(target=run)
    worker.start()
    try:
        time.sleep(0.5)  # the reader process runs while `ours` is open here
        ours.close()
        started = time.monotonic()
        assert peer.recv(1) == b""  # end of stream: no other process holds `ours`
        assert time.monotonic() - started < 2
        assert not done.is_set()
    finally:
        worker.join()
        peer.close()


def test_the_zygote_and_its_readers_die_with_the_gateway() -> None:
    """A gateway killed mid-read leaves no zygote and no reader process behind."""
    code = (
        "import sys, time\n"
        "from gateway.classify.formats import isolation\n"
        "from gateway.classify.formats.base import BytesAccess\n"
        "from gateway.classify.formats.testing import RecordingExtract\n"
        "from tests.classify.formats.test_isolation import _child_pid\n"
        "import threading\n"
        "out = RecordingExtract()\n"
        "threading.Thread(target=isolation.isolated, daemon=True,\n"
        "    args=(_child_pid, BytesAccess(b'60'), out, 'x')).start()\n"
        "while not out.members or not out.members[0].text: time.sleep(0.05)\n"
        "print(out.members[0].text, flush=True)\n"
        "time.sleep(60)\n"
    )
    gateway = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=os.getcwd()
    )
    try:
        assert gateway.stdout is not None
        reader, zygote = map(int, gateway.stdout.readline().split())
        assert _alive(reader)
        assert _alive(zygote)
    finally:
        gateway.kill()
        gateway.wait()
    deadline = time.monotonic() + 10
    while (_alive(reader) or _alive(zygote)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(zygote)
    assert not _alive(reader)


def test_text_frames_end_between_characters(monkeypatch: pytest.MonkeyPatch) -> None:
    """A member's UTF-8 longer than a frame is cut between characters (the gateway decodes
    what is not ASCII frame by frame), each frame after the member's id, nothing lost."""
    sent: list[tuple[bytes, bytes, bytes]] = []

    class Channel:
        def send(self, kind: bytes, payload: bytes, prefix: bytes = b"") -> None:
            sent.append((kind, prefix, payload))

    monkeypatch.setattr(isolation, "_TEXT_PIECE", 8)
    text = "é中a𝄞" * 20
    isolation._ChildOut(Channel(), 7).write(text.encode())  # type: ignore[arg-type]
    assert len(sent) > 1
    assert all(kind == b"W" and prefix == (7).to_bytes(4, "little") for kind, prefix, _ in sent)
    assert all(0 < len(payload) <= 8 for *_, payload in sent)
    assert "".join(bytes(payload).decode("utf-8") for *_, payload in sent) == text
    # A nested file's bytes need not be UTF-8: a run of continuation bytes still moves on.
    sent.clear()
    binary = b"PK" + b"\x80" * 40 + b"\xff" * 5
    isolation._ChildOut(Channel(), 8).write(binary)  # type: ignore[arg-type]
    assert b"".join(bytes(payload) for *_, payload in sent) == binary
    assert all(0 < len(payload) <= 8 for *_, payload in sent)


def _blas_threads(source: BytesAccess, out: RecordingExtract) -> None:
    member = out.member("environment", "text/plain")
    names = ("OPENBLAS_NUM_THREADS", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
    member.write(",".join(os.environ.get(name, "unset") for name in names))
    member.close()


def test_reader_processes_start_numpy_and_malloc_tuned(monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader process never gets OpenBLAS's spinning thread pool, and its malloc keeps
    what it frees, whatever the gateway's environment says."""
    for name in ("OPENBLAS_NUM_THREADS", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        monkeypatch.delenv(name, raising=False)
    isolation._ZYGOTE._stop()  # a zygote started now, from this environment
    out = RecordingExtract()
    isolation.isolated(_blas_threads, BytesAccess(b"x"), out, "x")  # type: ignore[arg-type]
    assert out.members[0].text == f"1,{32 << 20},{isolation.ISOLATED_MAX_MEMORY}"


_SCATTERED = [(5, 10), (100_000, 4096), (0, 0), (999_990, 50), (2_000_000, 8), (42, 1)] * 50


def _scattered(source: BytesAccess, out: RecordingExtract) -> None:
    member = out.member("ranges", "text/plain")
    for got in read_ranges(source, _SCATTERED):
        member.write(got.hex() + "\n")
    member.close()


def test_scattered_reads_go_out_together_and_come_back_in_order() -> None:
    """read_many across the process boundary: every range answered in order (empty past
    the end), each asked of the gateway once, in more than one group of requests."""
    body = bytes(range(256)) * 4000  # 1,024,000 bytes
    source = _CountingAccess(body)
    out = RecordingExtract()
    isolation.isolated(_scattered, source, out, "x")  # type: ignore[arg-type]
    expected = "".join(body[o : o + n].hex() + "\n" for o, n in _SCATTERED)
    assert out.members[0].text == expected
    assert len(_SCATTERED) > isolation._MANY_READS
    asked = [(o, n) for o, n in _SCATTERED if n and o < len(body)]
    assert source.requests == len(asked)
    assert source.served == sum(len(body[o : o + n]) for o, n in asked)


# -- members handed over (the reader process reads the file itself) ----------------------


class _HandedFile(BytesAccess):
    """Bytes that also live in a file the reader process may open itself."""

    def __init__(self, data: bytes, file: str | int, opener: str = "") -> None:
        super().__init__(data)
        self.file = file
        self.opener = opener or "gateway.classify.formats.files:open_handed"
        self.answered = 0

    def handoff(self) -> Handoff:
        return Handoff(self.file, self.opener, b"")

    def read_at(self, offset: int, length: int) -> bytes:
        self.answered += 1
        return super().read_at(offset, length)


def _read_back(source: BytesAccess, out: RecordingExtract) -> None:
    member = out.member("all", "text/plain")
    member.write(source.read_at(0, source.size).decode())
    member.close()


def test_a_handed_over_file_is_read_in_the_reader_process(tmp_path: Path) -> None:
    body = "".join(f"{i:06d}\n" for i in range(50_000)).encode()
    path = tmp_path / "member"
    path.write_bytes(body)
    with path.open("rb") as handle:
        for source in (_HandedFile(body, str(path)), _HandedFile(body, handle.fileno())):
            out = RecordingExtract()
            isolation.isolated(_read_back, source, out, "x")  # type: ignore[arg-type]
            assert out.members[0].text == body.decode()
            assert source.answered == 0
        # FileAccess (gateway scan) hands its descriptor over too.
        out = RecordingExtract()
        isolation.isolated(_read_back, FileAccess(handle.fileno()), out, "x")  # type: ignore[arg-type]
        assert out.members[0].text == body.decode()


def test_a_file_that_cannot_be_opened_is_read_through_the_gateway(tmp_path: Path) -> None:
    body = b"read through the pipes\n"
    source = _HandedFile(body, str(tmp_path / "gone"))
    out = RecordingExtract()
    isolation.isolated(_read_back, source, out, "x")  # type: ignore[arg-type]
    assert out.members[0].text == body.decode()
    assert source.answered >= 1


def test_a_handed_over_file_that_is_not_the_member_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other"
    path.write_bytes(b"a different length")
    source = _HandedFile(b"the member", str(path))
    with pytest.raises(Unscannable, match="handed-over member is not the member"):
        isolation.isolated(_read_back, source, RecordingExtract(), "x")  # type: ignore[arg-type]


def test_an_opener_that_fails_is_the_members_failure(tmp_path: Path) -> None:
    path = tmp_path / "m"
    path.write_bytes(b"member")
    source = _HandedFile(b"member", str(path), opener="gateway.classify.formats.files:no_such")
    # The zygote imports the opener before it forks: a name that is not there is
    # the member's failure, not the gateway's.
    with pytest.raises(Unscannable, match="x: reader process failed"):
        isolation.isolated(_read_back, source, RecordingExtract(), "x")  # type: ignore[arg-type]
