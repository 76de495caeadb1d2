"""The policy in force, swapped atomically on reload; and a change watcher.

The server owns the triggers (SIGHUP, a periodic call to
:meth:`PolicyWatcher.changed`); this module owns what a reload means: load
and compile the new version off to the side, and only if it is valid make it
the one :meth:`PolicyHolder.current` returns. An evaluation that already
called ``current()`` keeps the version it started with, because a
:class:`~gateway.policy.engine.CompiledPolicy` is immutable. An invalid new
version never replaces a valid one; the outcome is reported to listeners (the
server logs it and writes an audit record) and to the metrics.

No asyncio here: the server may run :meth:`PolicyHolder.reload` in a worker
thread, since compiling the detector database takes a moment; a lock makes
concurrent reloads take turns.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from gateway.obs.metrics import Metrics
from gateway.policy.archive import files_digest
from gateway.policy.engine import CompiledPolicy
from gateway.policy.loader import POLICY_SUFFIXES, PolicyIOError, load_policy, policy_files
from gateway.policy.source import PolicyIssue, PolicyLoadError, Position

ReloadOutcome = Literal["success", "failure"]

#: What a watched file that does not exist contributes to the fingerprint.
_MISSING: Final = b"\x00missing"


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """The outcome of one load attempt.

    Attributes:
        result: ``success`` (the new version is in force) or ``failure`` (the
            previous version stays in force).
        version: the version in force after the attempt ('' if none).
        previous_version: the version in force before ('' at start-up).
        changed: a different version is now in force.
        errors: why the attempt failed (``file:line:col: message``).
        warnings: problems that did not stop loading.
        rejected: for a failure, the SHA-256 of the policy files that did not
            load (:func:`gateway.policy.archive.files_digest`).
    """

    result: ReloadOutcome
    version: str
    previous_version: str
    changed: bool
    errors: tuple[PolicyIssue, ...] = ()
    warnings: tuple[PolicyIssue, ...] = ()
    rejected: str = ""

    @property
    def ok(self) -> bool:
        """True when the attempt succeeded."""
        return self.result == "success"


ReloadListener = Callable[[ReloadResult], None]
Loader = Callable[[Path], CompiledPolicy]


class PolicyHolder:
    """Holds the compiled policy in force; reloads it without ever going empty.

    Args:
        path: the policy directory (or file).
        metrics: if given, ``policy_reloads``, ``policy_info``,
            ``policy_rejected`` and ``policy_last_reload_success`` are kept up
            to date.
        listeners: called with every :class:`ReloadResult`, in order, after the
            swap (log event, audit record). A listener that raises does not
            undo the swap; the error propagates to the caller of reload().
        loader: how a version is loaded (default :func:`load_policy`).
        clock: wall-clock seconds, for the last-success metric.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        metrics: Metrics | None = None,
        listeners: Iterable[ReloadListener] = (),
        loader: Loader = load_policy,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self._metrics = metrics
        self._listeners: list[ReloadListener] = list(listeners)
        self._loader = loader
        self._clock = clock
        self._lock = threading.Lock()
        self._current: CompiledPolicy | None = None
        #: The last load attempt's outcome (None before the first).
        self.last: ReloadResult | None = None

    def add_listener(self, listener: ReloadListener) -> None:
        """Also report future reload outcomes to ``listener``."""
        self._listeners.append(listener)

    def current(self) -> CompiledPolicy:
        """The policy in force (hold on to it for the whole of one transfer).

        Raises:
            RuntimeError: nothing was ever loaded (call :meth:`reload` at start-up).
        """
        policy = self._current
        if policy is None:
            raise RuntimeError("no policy loaded yet")
        return policy

    @property
    def loaded(self) -> bool:
        """Whether a policy is in force (for ``/readyz``)."""
        return self._current is not None

    def _digest(self) -> str:
        try:
            return files_digest(policy_files(self.path))
        except (OSError, PolicyIOError):
            return ""

    def reload(self) -> ReloadResult:
        """Load the policy at :attr:`path`; swap it in only if it is valid.

        Never raises for an invalid or unreadable policy: the result says what
        happened. At start-up the caller refuses to start when the first
        result is a failure (there is no previous version to keep).
        """
        with self._lock:
            previous = self._current
            before = previous.version if previous else ""
            try:
                policy = self._loader(self.path)
            except PolicyLoadError as exc:
                result = ReloadResult(
                    "failure", before, before, False, tuple(exc.errors), rejected=self._digest()
                )
            except PolicyIOError as exc:
                issue = PolicyIssue(Position(str(self.path)), exc.detail)
                result = ReloadResult("failure", before, before, False, (issue,))
            else:
                self._current = policy
                result = ReloadResult(
                    "success",
                    policy.version,
                    before,
                    policy.version != before,
                    (),
                    policy.warnings,
                )
                self._record_success(previous, policy)
            if self._metrics is not None:
                self._metrics.policy_reloads.labels(result.result).inc()
                # Stays 1 until a valid version loads: a rejected edit must not hide.
                self._metrics.policy_rejected.set(0 if result.ok else 1)
        self.last = result
        for listener in list(self._listeners):
            listener(result)
        return result

    def _record_success(self, previous: CompiledPolicy | None, policy: CompiledPolicy) -> None:
        if self._metrics is None:
            return
        if previous is not None and (previous.version, previous.name) != (
            policy.version,
            policy.name,
        ):
            # The old version's info series goes, so dashboards show one version in force.
            with contextlib.suppress(KeyError):
                self._metrics.policy_info.remove(previous.version, previous.name)
        self._metrics.policy_info.labels(policy.version, policy.name).set(1)
        self._metrics.policy_last_reload_success.set(self._clock())


class PolicyWatcher:
    """Notices when the policy files (or the key files they name) change.

    A fingerprint is a SHA-256 over the names and contents of the policy
    directory's YAML files (test files included: they are cheap to hash and
    rarely change alone) and of the extra files, such as recipient key files.
    Comparing content, not modification times, means a ``touch`` does not
    trigger a reload and a same-second edit is not missed.

    With ``marker``, ``path`` is one marker file (``.publish``) whose change
    publishes an edit: there a ``touch`` is the signal, so its modification
    time counts too, and the policy files themselves are not watched.

    Args:
        path: the policy directory or file, or the marker file.
        extra: further files to watch (``CompiledPolicy.sources``).
        marker: watch ``path`` as a publish marker.
    """

    def __init__(
        self, path: Path | str, extra: Sequence[Path] = (), *, marker: bool = False
    ) -> None:
        self.path = Path(path)
        self._marker = marker
        self._extra = () if marker else tuple(extra)
        self._last = self.fingerprint()

    def watch(self, extra: Sequence[Path]) -> None:
        """Replace the extra files (after a successful reload) without a spurious change."""
        if not self._marker:
            self._extra = tuple(extra)
        self._last = self.fingerprint()

    def _files(self) -> list[Path]:
        if self.path.is_dir():
            try:
                found = [p for p in self.path.iterdir() if p.name.endswith(POLICY_SUFFIXES)]
            except OSError:
                found = []
        else:
            found = [self.path]
        return sorted({*found, *self._extra})

    def fingerprint(self) -> str:
        """The current fingerprint of the watched files."""
        digest = hashlib.sha256()
        if self._marker:
            try:
                stat = self.path.stat()
                digest.update(f"{stat.st_mtime_ns}:{stat.st_size}".encode())
            except OSError:
                digest.update(_MISSING)
        for path in self._files():
            digest.update(str(path).encode("utf-8", "surrogateescape") + b"\x00")
            try:
                digest.update(hashlib.sha256(path.read_bytes()).digest())
            except OSError:
                digest.update(_MISSING)
        return digest.hexdigest()

    def changed(self) -> bool:
        """True once per change since the last call (or since construction)."""
        now = self.fingerprint()
        if now == self._last:
            return False
        self._last = now
        return True
