"""Reader processes: C libraries read hostile files outside the gateway's process.

Some readers hand a member to a large C or C++ library (libhdf5 through
h5py, Arrow's Parquet, IPC and ORC readers through pyarrow). Those libraries
are not safe on hostile input: a mutated file can make them allocate
gigabytes from one lying length, spin, or crash the process (libhdf5 and
Arrow both have long fuzzing histories; this project's mutation tests found
such files). They are also large: importing pyarrow alone adds ~90 MB to a
process's RSS, which the gateway's own memory target (SPEC §9: < 150 MB
whatever the transfer) cannot carry.

So such a reader runs in a **reader process**, and the gateway's process
never loads the library:

* a **zygote** process is started on first need (``python -c`` this
  module's :func:`zygote_main`, a fresh interpreter with no threads and none
  of the gateway's sockets or spool files). It imports each reader's module
  and library once, the first time that reader is asked for, then waits on a
  ``SOCK_SEQPACKET`` socket;
* for each member, the gateway sends the reader's name and three pipe ends,
  and the member's file when it can be handed over (``SCM_RIGHTS``); the
  zygote forks a reader process, which costs a
  millisecond and shares the imported libraries copy-on-write;
* the reader process limits itself (address space: what it inherited plus
  :data:`ISOLATED_MAX_MEMORY`; CPU seconds by the member's size; no core
  file), gets its format's scout notes first (``scout_notes``: what a scout
  noted as the member streamed in), reads the member itself when the gateway
  handed its file over (``Handoff``: the transfer's spool, with its key; the
  file ``gateway scan`` reads) or else by asking the gateway for byte ranges,
  and
  reports members, text, numbers, findings and attributes as framed
  messages, which the gateway replays into the real :class:`Extract`;
* a crash, an exhausted limit or :data:`ISOLATED_TIMEOUT_SECONDS` of wall
  clock makes the member ``Unscannable`` (``<fmt>: reader process failed``),
  never the gateway's failure. The zygote and its reader processes die with
  the gateway: the zygote exits when its socket closes, and a reader process
  gets ``SIGKILL`` when the zygote dies (``PR_SET_PDEATHSIG``).

Where ``fork`` or descriptor passing does not exist the reader runs inline.
"""

from __future__ import annotations

import collections
import contextlib
import faulthandler
import fcntl
import importlib
import json
import os
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

from gateway.classify.formats.base import (
    Extract,
    Handoff,
    RandomAccess,
    ScoutedAccess,
    Unscannable,
    handoff_of,
    scout_notes,
    source_closed,
)
from gateway.posix import write_all

# -- bounds --------------------------------------------------------------------

#: Wall-clock time a reader process may take, plus one second per
#: :data:`ISOLATED_CPU_BYTES_PER_SECOND` of the member (a 2 GB Parquet file
#: renders in well under a minute at the measured rate; a spinning library is
#: cut off here).
ISOLATED_TIMEOUT_SECONDS: Final = 300.0
#: Address space a reader process may add to what it inherited from the
#: zygote: a library's caches, one rendering step and its own allocations fit
#: in a few hundred MiB; a lying length asks for gigabytes and fails here.
ISOLATED_MAX_MEMORY: Final = 1 << 30
#: CPU seconds a reader process may use: a base for opening the file, plus one
#: second per this many bytes of it (gzip-compressed HDF5 decodes at ~10 MB/s
#: here, measured; half that allows for slower hosts). libhdf5 was seen
#: spinning forever on a mutated 8 KB netCDF file.
ISOLATED_CPU_SECONDS: Final = 20.0
ISOLATED_CPU_BYTES_PER_SECOND: Final = 5_000_000
#: How long the zygote may take to start (a fresh interpreter importing the
#: gateway's classifier: about a second here).
ZYGOTE_START_SECONDS: Final = 60.0

#: Allocations a reader process's malloc serves from its heap rather than
#: mapping them alone (glibc's largest: 32 MiB on 64-bit).
_MALLOC_MMAP_BYTES: Final = 32 << 20
#: prctl(2) option: the signal a process gets when its parent dies.
_PR_SET_PDEATHSIG: Final = 1
#: Bytes a reader process asks for at least per read (it keeps one window of
#: them), a window that then grows while reads walk forward. Small: a jump (a
#: Parquet page header, a kilobyte at the start of each page) costs the gateway
#: the spool chunk it falls in, not the next one too, and the data reads after
#: the walk decrypt that chunk again anyway.
_WINDOW: Final = 4 << 10
#: The most a forward walk's window grows to (the pipe's buffer).
_MAX_WINDOW: Final = 1 << 20
#: Reads asked for in one write by ``read_many`` (16 bytes each: 4 KiB, the
#: most a pipe takes atomically, PIPE_BUF).
_MANY_READS: Final = 256
_FRAME: Final = struct.Struct("<cI")
_READ_REQUEST: Final = struct.Struct("<QQ")
#: Largest message from a reader process; a member's text or bytes are sent
#: in pieces of at most :data:`_TEXT_PIECE` characters (4 bytes each at most
#: in UTF-8) or bytes. The gateway holds one frame at a time: frames of a
#: whole 1.6 MB batch made its heap grow by tens of MB over a 256 MB Parquet
#: transfer (the proxy bench's RSS phase).
_MAX_FRAME: Final = 16 << 20
_TEXT_PIECE: Final = 1 << 20
#: Bytes the gateway reads from a reader process's report pipe at a time.
_READ_LANDING: Final = 1 << 20
#: Reports a reader process may have queued for its sender thread: the reader
#: renders the next batch while the gateway scans the last one (one batch's
#: text and then some; past it the reader waits for the gateway).
_SEND_QUEUE_BYTES: Final = 32 << 20
#: Pipe buffer asked for (Linux's default is 64 KiB; 1 MiB is the default
#: most an unprivileged process may set, /proc/sys/fs/pipe-max-size): one
#: Arrow read or one batch's text crosses in a few system calls.
_PIPE_BYTES: Final = 1 << 20
#: How often the gateway looks whether a silent reader process's scan was
#: cancelled (its source closed: a transfer's time-out, a shutdown).
_CANCEL_POLL_SECONDS: Final = 0.2
#: How long the read server may take to see a finished process's pipe close.
_SERVER_JOIN_SECONDS: Final = 10.0
#: Largest request to the zygote (a reader's module and name, a size).
_MAX_REQUEST: Final = 4096
#: Most bytes of scout notes sent to a reader process (before its first read);
#: more are not sent, and the reader reads for itself. Each format bounds its
#: own notes well below this (Parquet's: 768 KiB). A handoff's parameters (a
#: spool's size and key: 24 bytes) are held to it too.
MAX_SCOUT_NOTES_BYTES: Final = 4 << 20

Reader = Callable[[RandomAccess, Extract], None]

_cpu_lock = threading.Lock()
_cpu_seconds = 0.0


def reader_cpu_seconds() -> float:
    """CPU seconds used by this process's reader processes so far (those that finished).

    Each reader process reports its own when it is done; ``gateway bench
    classify`` adds it to the gateway's to show what a format costs in all.
    """
    with _cpu_lock:
        return _cpu_seconds


def _done(payload: bytes) -> tuple[int, int]:
    """A "D" report: count the process's CPU seconds; the spool chunks its own view
    decrypted and found cached (0, 0 when it read through the gateway)."""
    global _cpu_seconds
    fields = payload.split()
    try:
        seconds, decrypted, cached = float(fields[0]), int(fields[1]), int(fields[2])
    except (ValueError, IndexError):
        return 0, 0  # a garbled report counts nothing
    if len(fields) != 3 or not (
        0 <= seconds < 1e9 and 0 <= decrypted < 1 << 40 and 0 <= cached < 1 << 40
    ):
        return 0, 0
    with _cpu_lock:
        _cpu_seconds += seconds
    return decrypted, cached


def isolated(
    reader: Reader,
    source: RandomAccess,
    out: Extract,
    fmt: str,
    prepare: Callable[[], None] | None = None,
) -> None:
    """Run ``reader(source, out)`` in a reader process, replaying what it reports into ``out``.

    Args:
        reader: a module-level function (the zygote imports it by name).
        source: the member; the reader process reads it through requests here.
        out: where the member's text, findings and counts go.
        fmt: the format's name, for failure reasons.
        prepare: a module-level function the zygote runs once before the
            first fork for this reader: it imports the library (through its
            :class:`~gateway.classify.formats.base.LazyModule` handles, so
            their load hooks run), so each reader process starts with it.

    Raises:
        Unscannable: what the reader raised, or ``<fmt>: reader process
            failed`` when it crashed, ran out of memory or time.
    """
    if not _ZYGOTE.supported:
        if prepare is not None:
            prepare()
        reader(source, out)
        return
    events_r, events_w = os.pipe()  # reports: reader process -> here
    requests_r, requests_w = os.pipe()  # byte ranges asked for: reader process -> here
    data_r, data_w = os.pipe()  # the bytes: here -> reader process
    for fd in (events_w, data_w):
        _widen(fd)
    handoff, handed = _handed(source)  # closed with the pipe ends theirs
    theirs = (events_w, requests_w, data_r) + ((handed,) if handed >= 0 else ())
    try:
        opener = handoff.opener if handoff is not None else None
        pid = _ZYGOTE.fork(reader, prepare, source.size, fmt, theirs, opener)
    except BaseException:
        for fd in (events_r, requests_r, data_w):
            os.close(fd)
        raise
    finally:
        for fd in theirs:
            os.close(fd)
    handle = _ProcessHandle(pid)
    notes = scout_notes(source)
    if len(notes) > MAX_SCOUT_NOTES_BYTES:
        notes = b""
    preamble = _preamble(notes) + _preamble(
        handoff.opener.encode() + b"\n" + handoff.params if handoff is not None else b""
    )
    # Reads are served on their own thread: the reader process decodes the
    # next pages while this thread replays (and the matcher scans) its text.
    server = threading.Thread(
        target=_serve_reads, args=(source, preamble, requests_r, data_w, handle), daemon=True
    )
    server.start()
    done = False
    try:
        deadline = ISOLATED_TIMEOUT_SECONDS + source.size / ISOLATED_CPU_BYTES_PER_SECOND
        decrypted, cached = _parent(
            out, events_r, fmt, time.monotonic() + deadline, lambda: source_closed(source)
        )
        done = True
        if decrypted or cached:
            count = getattr(source, "count_handed_reads", None)
            if callable(count):
                count(decrypted, cached)
    finally:
        if not done:
            handle.kill()
        # The server sees the end of the requests pipe once the process is gone.
        server.join(_SERVER_JOIN_SECONDS)
        if server.is_alive():
            handle.kill()
            server.join()
        for fd in (events_r, requests_r, data_w):
            os.close(fd)
        handle.close()


def _handed(source: RandomAccess) -> tuple[Handoff | None, int]:
    """How the reader process reads ``source`` itself, and the file opened for it (-1: it
    reads through the gateway)."""
    handoff = handoff_of(source)
    if handoff is None or len(handoff.opener) + len(handoff.params) > MAX_SCOUT_NOTES_BYTES:
        return None, -1
    try:
        if isinstance(handoff.file, int):
            return handoff, os.dup(handoff.file)
        return handoff, os.open(handoff.file, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None, -1  # the reader process asks for its reads instead


def _preamble(part: bytes) -> bytes:
    return len(part).to_bytes(4, "little") + part


def _serve_reads(
    source: RandomAccess, preamble: bytes, requests: int, data: int, handle: _ProcessHandle
) -> None:
    """Send the preamble (the scout's notes, the handoff), then answer the reader process's
    reads until it closes its end (it exited or was killed)."""
    try:
        write_all(data, preamble)
        while True:
            request = _read_exactly(requests, _READ_REQUEST.size)
            offset, length = _READ_REQUEST.unpack(request)
            got = source.read_at(offset, min(length, max(0, source.size - offset)))
            os.write(data, len(got).to_bytes(4, "little"))
            write_all(data, got)
    except EOFError:
        return  # the process is done
    except Exception:  # noqa: BLE001 - the source failed, or the process died mid-answer
        handle.kill()  # its report stream ends: the member is "reader process failed"


def _widen(fd: int) -> None:
    """Give a pipe :data:`_PIPE_BYTES` of buffer where Linux allows it (fewer wake-ups)."""
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)


def _name(function: Callable[..., Any]) -> str:
    """``module:qualname`` of a module-level function (what the zygote imports)."""
    qualname = function.__qualname__
    if "<locals>" in qualname or "." in qualname:
        raise TypeError(f"{qualname}: a reader process runs module-level functions only")
    return f"{function.__module__}:{qualname}"


def _resolve(name: str) -> Callable[..., Any]:
    module, _, qualname = name.partition(":")
    function: Callable[..., Any] = getattr(importlib.import_module(module), qualname)
    return function


class _ProcessHandle:
    """A reader process, killed by a pidfd where Linux has them (no pid-reuse race)."""

    def __init__(self, pid: int) -> None:
        self._pid = pid
        self._pidfd = -1
        with contextlib.suppress(OSError, AttributeError):
            self._pidfd = os.pidfd_open(pid)

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            if self._pidfd >= 0:
                signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
            else:
                os.kill(self._pid, signal.SIGKILL)

    def close(self) -> None:
        if self._pidfd >= 0:
            os.close(self._pidfd)
            self._pidfd = -1


class _Zygote:
    """The gateway's side of the zygote: started on first need, restarted if it died."""

    def __init__(self) -> None:
        self.supported = (
            hasattr(os, "fork")
            and hasattr(socket, "send_fds")
            and hasattr(socket, "SOCK_SEQPACKET")
        )
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._socket: socket.socket | None = None
        self._owner = 0

    def fork(
        self,
        reader: Reader,
        prepare: Callable[[], None] | None,
        size: int,
        fmt: str,
        fds: tuple[int, ...],
        opener: str | None = None,
    ) -> int:
        """Ask the zygote for a reader process holding ``fds`` (the three pipe ends, and
        the member's file when it is handed over, with ``opener``); its pid."""
        request = json.dumps(
            {
                "reader": _name(reader),
                "prepare": _name(prepare) if prepare is not None else None,
                "opener": opener,
                "size": size,
                "fmt": fmt,
            }
        ).encode()
        with self._lock:
            for attempt in range(2):  # a zygote that died since the last member is restarted once
                try:
                    channel = self._started()
                    socket.send_fds(channel, [request], list(fds))
                    reply = channel.recv(16)
                except OSError:
                    reply = b""
                if len(reply) == 8:
                    return int.from_bytes(reply, "little")
                self._stop()
                if attempt:
                    break
        raise Unscannable(f"{fmt}: reader process failed")

    def _started(self) -> socket.socket:
        if self._socket is not None and self._owner == os.getpid():
            return self._socket
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            # The zygote imports modules by name as this process does; with
            # stdio on /dev/null, a C library's message never reaches the
            # gateway's log stream (reasons travel as Unscannable).
            # One thread for numpy's OpenBLAS: a reader process renders on one core
            # and decodes on the other, and an idle BLAS thread spins on a core
            # after any linear-algebra call (~4 % of a Parquet read's CPU, measured).
            # glibc's malloc keeps what a reader process frees (it lives for one
            # member): batches of a few MB were mapped, faulted in page by page
            # and given back each time (~5 % of its CPU on the bench's Parquet
            # file, an eighth fewer page faults).
            env = dict(
                os.environ,
                PYTHONPATH=os.pathsep.join(p for p in sys.path if p),
                OPENBLAS_NUM_THREADS="1",
                MALLOC_MMAP_THRESHOLD_=str(_MALLOC_MMAP_BYTES),
                MALLOC_TRIM_THRESHOLD_=str(ISOLATED_MAX_MEMORY),
            )
            process = subprocess.Popen(  # noqa: S603 - this interpreter, a fixed entry point
                [
                    sys.executable,
                    "-c",
                    "from gateway.classify.formats.isolation import zygote_main; zygote_main()",
                    str(theirs.fileno()),
                ],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
            )
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.settimeout(ZYGOTE_START_SECONDS)
        try:
            ready = ours.recv(16)
        except OSError:
            ready = b""
        if ready != b"ready":
            ours.close()
            process.kill()
            process.wait()
            raise OSError("the reader zygote did not start")
        self._process, self._socket, self._owner = process, ours, os.getpid()
        return ours

    def _stop(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
        if self._process is not None:
            with contextlib.suppress(OSError):
                self._process.kill()
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                self._process.wait(timeout=5)
            self._process = None

    @property
    def pid(self) -> int | None:
        """The zygote's pid while it runs."""
        return self._process.pid if self._process is not None else None


_ZYGOTE: Final = _Zygote()


def zygote_pid() -> int | None:
    """The running zygote's pid (None before the first reader process)."""
    return _ZYGOTE.pid


# -- the zygote ----------------------------------------------------------------------------


def zygote_main() -> None:
    """The zygote: fork a reader process per request until the gateway closes the socket."""
    channel = socket.socket(fileno=int(sys.argv[1]))
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # reader processes are reaped by the kernel
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's ^C is the gateway's to handle
    prepared: set[str] = set()
    channel.sendall(b"ready")
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(channel, _MAX_REQUEST, 4)
        except OSError:
            return
        if not message:  # the gateway closed its end
            return
        pid = 0
        try:
            request = json.loads(message)
            if len(fds) != (4 if request["opener"] else 3):
                raise ValueError("three descriptors expected, four with a handed-over file")
            if request["prepare"] and request["prepare"] not in prepared:
                _resolve(request["prepare"])()
                prepared.add(request["prepare"])
            reader = _resolve(request["reader"])
            if request["opener"]:
                _resolve(request["opener"])  # its module imported here once, not per process
            pid = os.fork()
            if pid == 0:
                channel.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                code = 0
                try:
                    _child(reader, int(request["size"]), fds, str(request["fmt"]))
                except BaseException:  # noqa: BLE001 - nothing may escape a forked child
                    code = 1
                finally:
                    os._exit(code)
        except Exception:  # noqa: BLE001 - a bad request, a failed import or fork
            pid = 0
        finally:
            for fd in fds:
                os.close(fd)
        try:
            channel.sendall(pid.to_bytes(8, "little") if pid else b"failed")
        except OSError:
            return


def _die_with_parent() -> None:
    """Ask the kernel to kill this reader process when the zygote dies (Linux).

    Without it a reader spinning on a hostile file outlives a killed
    zygote (and so a killed gateway), reparented to init.
    """
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _child(reader: Reader, size: int, fds: Sequence[int], fmt: str) -> None:
    """The reader process: limit itself, read through the pipes, report, exit."""
    faulthandler.disable()  # a crash here is reported by the gateway, not dumped
    _die_with_parent()
    with contextlib.suppress(OSError, ValueError):
        # A library spinning on a hostile file is stopped by its CPU time, not
        # only the gateway's wall clock (which a loaded host stretches).
        cpu = int(ISOLATED_CPU_SECONDS + size / ISOLATED_CPU_BYTES_PER_SECOND)
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    with contextlib.suppress(OSError, ValueError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[0])
        limit = pages * resource.getpagesize() + ISOLATED_MAX_MEMORY
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    events, requests, data = fds[:3]
    channel = _ChildChannel(events, requests, data, size)
    try:
        reader(channel.source(fds[3] if len(fds) > 3 else -1), channel)
    except Unscannable as exc:
        channel.send(b"U", exc.reason.encode())
    except MemoryError:
        channel.send(b"U", f"{fmt}: reader process out of memory".encode())
    except Exception:  # noqa: BLE001 - reported as this member's failure
        channel.send(b"U", f"{fmt}: unreadable".encode())
    usage = resource.getrusage(resource.RUSAGE_SELF)  # this process's, since the fork
    decrypted, cached = channel.handed_reads()
    channel.send(b"D", b"%.6f %d %d" % (usage.ru_utime + usage.ru_stime, decrypted, cached))
    channel.flush()


class _ChildChannel:
    """The reader process's view: a :class:`RandomAccess` and an :class:`Extract` over pipes."""

    def __init__(self, events: int, requests: int, data: int, size: int) -> None:
        self._requests = requests
        self._data = data
        self._size = size
        # The gateway sends the scout's notes first (scout_notes finds them here),
        # then how to read the member here when it handed it over.
        self.scout_notes = _read_preamble(data)
        self._handoff = _read_preamble(data)
        self._local: RandomAccess | None = None
        self._sender = _Sender(events)
        self._start = 0
        self._window = b""
        self._readahead = _WINDOW
        self._next_id = 0
        # A reader may read on one thread while it reports on another (the
        # Parquet reader decodes the next batch ahead): a read's request and
        # answer are one exchange.
        self._read_lock = threading.Lock()

    @property
    def size(self) -> int:
        return self._size

    def source(self, fd: int) -> RandomAccess:
        """What the reader reads: the member opened here from the file the gateway handed
        over (``fd``), or else this channel (each read asked of the gateway).

        Raises:
            Unscannable: the handed-over file is not the member (its view says why).
        """
        if fd < 0 or not self._handoff:
            if fd >= 0:
                os.close(fd)
            return self
        opener, _, params = self._handoff.partition(b"\n")
        local: RandomAccess = _resolve(opener.decode())(fd, params)
        self._local = local
        if local.size != self._size:
            raise Unscannable("handed-over member is not the member")
        return ScoutedAccess(local, self.scout_notes)

    def handed_reads(self) -> tuple[int, int]:
        """Spool chunks the handed-over view decrypted and found cached (for the gateway's
        metrics: its own view saw none of these reads)."""
        local = self._local
        decrypted = getattr(local, "chunks_decrypted", 0)
        cached = getattr(local, "cache_hits", 0)
        return (
            (decrypted, cached)
            if isinstance(decrypted, int) and isinstance(cached, int)
            else (0, 0)
        )

    def send(self, kind: bytes, payload: bytes | memoryview, prefix: bytes = b"") -> None:
        self._sender.send(kind, payload, prefix)

    def flush(self) -> None:
        """Wait until every report is written to the gateway."""
        self._sender.flush()

    def read_at(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise Unscannable("negative offset or length")
        end = min(offset + length, self._size)
        if offset >= end:
            return b""
        with self._read_lock:
            if self._start <= offset and end <= self._start + len(self._window):
                return self._window[offset - self._start : end - self._start]
            # Reads that walk forward close after the window (a footer's small
            # pages' headers, one after another) get a growing window: fewer
            # round trips to the gateway. A read further on is a jump (the
            # headers of 1 MiB pages): a window grown for it would carry a
            # megabyte through the pipe for each kilobyte read.
            window_end = self._start + len(self._window)
            if window_end <= offset < window_end + self._readahead // 4:
                self._readahead = min(self._readahead * 2, _MAX_WINDOW)
            else:
                self._readahead = _WINDOW
            want = max(end - offset, self._readahead)
            os.write(self._requests, _READ_REQUEST.pack(offset, want))  # atomic: < PIPE_BUF
            head = _read_exactly(self._data, 4)
            got = _read_exactly(self._data, int.from_bytes(head, "little"))
            self._start, self._window = offset, got
            return got[: end - offset]

    def read_many(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """Each ``(offset, length)``, asked for together: one wait for the lot.

        The requests go out in groups of :data:`_MANY_READS` (one atomic
        write each); the gateway answers them in order. Answers bypass the
        window (these are scattered small reads).
        """
        out: list[bytes] = []
        with self._read_lock:
            for first in range(0, len(ranges), _MANY_READS):
                asked: list[int] = []
                requests = []
                for offset, length in ranges[first : first + _MANY_READS]:
                    if offset < 0 or length < 0:
                        raise Unscannable("negative offset or length")
                    end = min(offset + length, self._size)
                    asked.append(max(0, end - offset))
                    if end > offset:
                        requests.append(_READ_REQUEST.pack(offset, end - offset))
                if requests:
                    os.write(self._requests, b"".join(requests))  # atomic: <= PIPE_BUF
                for length in asked:
                    if not length:
                        out.append(b"")
                        continue
                    head = _read_exactly(self._data, 4)
                    out.append(_read_exactly(self._data, int.from_bytes(head, "little")))
        return out

    # -- Extract -----------------------------------------------------------------------

    def _open(self, kind: bytes, name: str, content_type: str) -> int:
        self._next_id += 1
        header = json.dumps([self._next_id, name, content_type]).encode()
        self.send(kind, header)
        return self._next_id

    def member(self, name: str, content_type: str) -> _ChildOut:
        return _ChildOut(self, self._open(b"M", name, content_type))

    def nested(self, name: str) -> _ChildOut:
        return _ChildOut(self, self._open(b"N", name, ""))

    def finding(self, label: str, value: bytes) -> None:
        self.send(b"F", json.dumps([label, value.hex()]).encode())

    def attribute(self, key: str, value: str) -> None:
        self.send(b"A", json.dumps([key, value]).encode())

    def numeric(self, values: int) -> None:
        self.send(b"#", str(values).encode())


class _Sender:
    """The reader process's reports, written to the gateway by a thread of their own.

    Rendering and the gateway's scan then overlap: the reader goes on with
    the next batch while the pipe drains at the speed the gateway scans,
    until :data:`_SEND_QUEUE_BYTES` are waiting. Reports keep their order;
    a write that fails (the gateway went away) fails every later ``send``.
    """

    def __init__(self, events: int) -> None:
        self._out = os.fdopen(events, "wb", buffering=1 << 16)
        self._queue: collections.deque[tuple[bytes, bytes, bytes | memoryview]] = (
            collections.deque()
        )
        self._queued = 0
        self._busy = False  # the thread holds reports it has not written yet
        self._failed: BaseException | None = None
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def send(self, kind: bytes, payload: bytes | memoryview, prefix: bytes = b"") -> None:
        """Queue one report: ``prefix`` then ``payload`` (written one after the other, not
        joined: a megabyte of text is not copied to put a member's id before it)."""
        with self._changed:
            while self._queued >= _SEND_QUEUE_BYTES and self._failed is None:
                self._changed.wait()
            if self._failed is not None:
                raise OSError("the gateway stopped reading") from self._failed
            self._queue.append((kind, prefix, payload))
            self._queued += len(payload)
            self._changed.notify_all()

    def flush(self) -> None:
        with self._changed:
            while (self._queue or self._busy) and self._failed is None:
                self._changed.wait()
            if self._failed is not None:
                raise OSError("the gateway stopped reading") from self._failed

    def _run(self) -> None:
        out = self._out
        while True:
            with self._changed:
                while not self._queue:
                    self._changed.wait()
                batch = list(self._queue)
                self._queue.clear()
                self._busy = True
            try:
                for kind, prefix, payload in batch:
                    out.write(_FRAME.pack(kind, len(prefix) + len(payload)))
                    if prefix:
                        out.write(prefix)
                    out.write(payload)
                with self._changed:
                    more = bool(self._queue)
                if not more:
                    out.flush()  # small reports go together; nothing is held back idle
            except BaseException as exc:  # noqa: BLE001 - reported to the sending thread
                with self._changed:
                    self._failed = exc
                    self._busy = False
                    self._changed.notify_all()
                return
            with self._changed:
                self._queued -= sum(len(payload) for _, _, payload in batch)
                self._busy = bool(self._queue)
                self._changed.notify_all()


class _ChildOut:
    """A member (text or nested) opened in the reader process."""

    def __init__(self, channel: _ChildChannel, ident: int) -> None:
        self._channel = channel
        self._id = ident.to_bytes(4, "little")

    def write(self, data: str | bytes) -> None:
        """Text (a str, or its UTF-8) of a text member, or the bytes of a nested one, in
        frames of at most :data:`_TEXT_PIECE` characters or bytes."""
        if isinstance(data, str):
            for start in range(0, len(data), _TEXT_PIECE):
                piece = data[start : start + _TEXT_PIECE].encode("utf-8", "surrogatepass")
                self._channel.send(b"W", piece, self._id)
            return
        view = memoryview(data)
        start = 0
        while start < len(view):
            end = min(start + _TEXT_PIECE, len(view))
            # A frame of text ends between characters (the gateway decodes what is
            # not ASCII frame by frame): a character starts at most three bytes
            # back. A nested file's bytes need not be UTF-8: then cut anywhere.
            for cut in range(end, max(start, end - 4), -1):
                if cut == len(view) or view[cut] & 0xC0 != 0x80:
                    end = cut
                    break
            self._channel.send(b"W", view[start:end], self._id)  # no copy: written as it is
            start = end

    def close(self) -> None:
        self._channel.send(b"C", self._id)


def _read_preamble(fd: int) -> bytes:
    """One part of what the gateway sends before any read (:func:`_preamble`)."""
    length = int.from_bytes(_read_exactly(fd, 4), "little")
    if length > MAX_SCOUT_NOTES_BYTES:
        raise OSError("a preamble over its bound")
    return _read_exactly(fd, length) if length else b""


def _read_exactly(fd: int, length: int) -> bytes:
    parts = []
    while length:
        part = os.read(fd, min(length, 1 << 20))
        if not part:
            raise EOFError("pipe closed")
        parts.append(part)
        length -= len(part)
    return b"".join(parts)


# -- the gateway's side of one reader process ------------------------------------------------


def _parent(
    out: Extract, events: int, fmt: str, deadline: float, closed: Callable[[], bool]
) -> tuple[int, int]:
    """Replay the reader process's reports until it is done, or ``closed()`` says the
    scan was cancelled (the source was closed: a handed-over reader never asks it for
    a read that would fail)."""
    buffer = bytearray()
    # Reads land here first: os.read would allocate a megabyte and shrink it to
    # what the pipe held, each time, fragmenting the gateway's heap.
    landing = bytearray(_READ_LANDING)
    opened: dict[int, Any] = {}
    failed = f"{fmt}: reader process failed"
    while True:
        while len(buffer) >= _FRAME.size:
            kind, length = _FRAME.unpack_from(buffer)
            if length > _MAX_FRAME:
                raise Unscannable(failed)
            if len(buffer) < _FRAME.size + length:
                break
            end = _FRAME.size + length
            # A "W" frame is a member's id, then its bytes: one copy of them out of
            # the buffer (a megabyte of text), not one for the frame and one more.
            start = _FRAME.size + 4 if kind == b"W" else _FRAME.size
            if start > end:
                raise Unscannable(failed)
            with memoryview(buffer) as view:
                head = bytes(view[_FRAME.size : start])
                payload = bytes(view[start:end])
            del buffer[:end]
            if kind == b"W":
                _write(opened, int.from_bytes(head, "little"), payload, failed)
                continue
            if kind == b"D":
                reads = _done(payload)
                if opened:
                    raise Unscannable(failed)
                return reads
            if kind == b"U":
                raise Unscannable(payload.decode("utf-8", "replace"))
            try:
                _replay(kind, payload, out, opened, failed)
            except (ValueError, TypeError) as exc:  # a garbled process
                raise Unscannable(failed) from exc
        if closed():
            raise Unscannable(f"{fmt}: the scan was cancelled")
        left = deadline - time.monotonic()
        if left <= 0:
            raise Unscannable(f"{fmt}: reader process took too long")
        ready, _, _ = select.select([events], [], [], min(left, _CANCEL_POLL_SECONDS))
        if not ready:
            continue
        got = os.readv(events, [landing])
        if not got:  # the process died without saying it was done
            raise Unscannable(failed)
        with memoryview(landing) as view:
            buffer += view[:got]


def _write(opened: dict[int, Any], ident: int, data: bytes, failed: str) -> None:
    """A "W" report: the next bytes of member ``ident`` (text as UTF-8, or a nested file)."""
    if ident not in opened:
        raise Unscannable(failed)
    try:
        opened[ident].write(data)  # text as UTF-8: the member decodes what is not ASCII
    except (ValueError, TypeError) as exc:  # a garbled process
        raise Unscannable(failed) from exc


def _replay(kind: bytes, payload: bytes, out: Extract, opened: dict[int, Any], failed: str) -> None:
    """Act on one report of the reader process."""
    if kind in (b"M", b"N"):
        ident, name, content_type = json.loads(payload)
        if kind == b"M":
            opened[ident] = out.member(name, content_type)
        else:
            opened[ident] = out.nested(name)
    elif kind == b"C":
        ident = int.from_bytes(payload[:4], "little")
        if ident not in opened:
            raise Unscannable(failed)
        opened.pop(ident).close()
    elif kind == b"#":
        out.numeric(int(payload))
    elif kind == b"F":
        label, value = json.loads(payload)
        out.finding(label, bytes.fromhex(value))
    elif kind == b"A":
        key, value = json.loads(payload)
        out.attribute(key, value)
    else:
        raise Unscannable(failed)
