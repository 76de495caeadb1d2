"""Hot reload: atomic swap, the old version stays on failure, metrics and listeners; the watcher."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from gateway.obs.metrics import Metrics
from gateway.policy import PolicyHolder, PolicyWatcher, ReloadResult
from tests.policy.conftest import WritePolicy, make_summary

POLICY = """\
routes:
  out: {direction: sz->hk, destination: "https://hk.example/in", encrypt: tls}
senders:
  alice: {team: lab, organisation: hku}
rules:
  - {id: r, action: %s, reason: r}
"""


def sample(metrics: Metrics, name: str, labels: dict[str, str] | None = None) -> float | None:
    return metrics.registry.get_sample_value(name, labels or {})


def test_reload_swaps_keeps_old_on_failure_and_reports(write_policy: WritePolicy) -> None:
    directory = write_policy({"p.yaml": POLICY % "allow"})
    metrics = Metrics()
    seen: list[ReloadResult] = []
    holder = PolicyHolder(directory, metrics=metrics, listeners=[seen.append], clock=lambda: 42.0)
    assert not holder.loaded
    with pytest.raises(RuntimeError, match="no policy loaded"):
        holder.current()

    first = holder.reload()
    assert (first.ok, first.changed, first.previous_version) == (True, True, "")
    v1 = holder.current()
    assert v1.version == first.version
    assert sample(metrics, "gateway_policy_reloads_total", {"result": "success"}) == 1
    assert sample(metrics, "gateway_policy_info", {"version": v1.version, "name": v1.name}) == 1
    assert sample(metrics, "gateway_policy_last_reload_success_timestamp_seconds") == 42.0

    # An in-flight evaluation holds v1; a broken edit must not disturb it.
    (directory / "p.yaml").write_text(POLICY % "maybe")
    failed = holder.reload()
    assert (failed.ok, failed.changed) == (False, False)
    assert failed.version == v1.version
    assert any("expected 'allow', 'block' or 'review'" in str(e) for e in failed.errors)
    assert holder.current() is v1
    assert sample(metrics, "gateway_policy_reloads_total", {"result": "failure"}) == 1

    (directory / "p.yaml").write_text(POLICY % "block")
    second = holder.reload()
    assert (second.ok, second.changed, second.previous_version) == (True, True, v1.version)
    v2 = holder.current()
    ctx = v2.context("out", "alice")
    assert v2.evaluate(ctx, make_summary()).action == "block"
    assert v1.evaluate(v1.context("out", "alice"), make_summary()).action == "allow"
    assert sample(metrics, "gateway_policy_info", {"version": v1.version, "name": v1.name}) is None
    assert sample(metrics, "gateway_policy_info", {"version": v2.version, "name": v2.name}) == 1
    assert [r.result for r in seen] == ["success", "failure", "success"]

    # Same content again: success, but nothing changed.
    again = holder.reload()
    assert (again.ok, again.changed) == (True, False)


def test_failure_at_startup_and_unreadable_path(tmp_path: Path, write_policy: WritePolicy) -> None:
    holder = PolicyHolder(tmp_path / "absent")
    result = holder.reload()
    assert not result.ok
    assert result.version == ""
    assert "no such policy file or directory" in str(result.errors[0])
    assert not holder.loaded
    broken = PolicyHolder(write_policy({"p.yaml": "rules: [\n"}))
    assert "YAML syntax error" in str(broken.reload().errors[0])


def test_concurrent_reloads_take_turns(write_policy: WritePolicy) -> None:
    directory = write_policy({"p.yaml": POLICY % "allow"})
    holder = PolicyHolder(directory, metrics=Metrics())
    results: list[ReloadResult] = []
    threads = [threading.Thread(target=lambda: results.append(holder.reload())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.ok for r in results] == [True] * 4
    assert sum(r.changed for r in results) == 1


def test_watcher_sees_content_changes_not_touches(
    write_policy: WritePolicy, tmp_path: Path
) -> None:
    directory = write_policy({"p.yaml": POLICY % "allow"})
    key = tmp_path / "key.pub"
    watcher = PolicyWatcher(directory, extra=[key])
    assert not watcher.changed()
    (directory / "p.yaml").touch()
    assert not watcher.changed()
    (directory / "p.yaml").write_text(POLICY % "block")
    assert watcher.changed()
    assert not watcher.changed()  # once per change
    (directory / "q.yaml").write_text("# new file\n")
    assert watcher.changed()
    (directory / "q.yaml").unlink()
    assert watcher.changed()
    key.write_text("age1...\n")  # a watched key file appearing counts
    assert watcher.changed()
    watcher.watch([])
    key.write_text("changed\n")
    assert not watcher.changed()
    (directory / "notes.txt").write_text("not a policy file")
    assert not watcher.changed()
