"""``gateway serve`` / ``gateway demo``: config errors, and the demo with the shipped policies."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog

from gateway.cli import main
from gateway.server.config import GatewaySettings, load_settings
from gateway.server.demo import DEMO_OFFICER_TOKEN, DEMO_TOKEN, instructions, prepare_demo
from gateway.server.runner import running

REPO = Path(__file__).parents[2]


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """``gateway serve`` configures logging onto pytest's captured stderr; undo it."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.configure(**saved)
    root.handlers[:] = handlers
    root.setLevel(level)


def test_bad_config_is_one_line_exit_2(tmp_path: Path, capsys: Any) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('[egress]\nport = "not a port"\n')
    assert main(["serve", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert str(config) in err
    assert "egress.port" in err
    assert "Traceback" not in err


def test_missing_config_file(tmp_path: Path, capsys: Any) -> None:
    assert main(["serve", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err


def test_invalid_yaml_names_line(tmp_path: Path, capsys: Any) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("egress:\n  port: [1,\n")
    assert main(["serve", "--config", str(config)]) == 2
    assert f"{config}:" in capsys.readouterr().err


def test_env_overrides_the_file(tmp_path: Path, monkeypatch: Any) -> None:
    config = tmp_path / "g.toml"
    config.write_text('name = "hk"\n[egress]\nport = 8081\npolicy_dir = "pol"\n')
    monkeypatch.setenv("GATEWAY_EGRESS__PORT", "9999")
    settings = load_settings(config)
    assert settings.egress is not None
    assert settings.egress.port == 9999
    # Relative paths are relative to the file, not to the working directory.
    assert settings.egress.policy_dir == tmp_path / "pol"


def _serve_egress(tmp_path: Path, policy: str, port: int = 0) -> subprocess.CompletedProcess[str]:
    """Run ``gateway serve`` on an egress-only config with ``policy`` as its one policy file."""
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "p.yaml").write_text(policy)
    (tmp_path / "g.toml").write_text(
        'ledger_url = "memory:"\nsecret_file = "secret"\n'
        f'[egress]\nport = {port}\npolicy_dir = "policies"\nspool_dir = "spool"\n'
        'spool_identity = "spool.key"\n'
        '[audit]\ndir = "audit"\nsigning_key = "audit.key"\n'
    )
    return subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(tmp_path / "g.toml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_policy_that_does_not_load_stops_serve_cleanly(tmp_path: Path) -> None:
    result = _serve_egress(tmp_path, "rules: [\n")
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("gateway: ")
    assert "p.yaml:" in last
    assert "Traceback" not in result.stderr


def _loopback(settings: GatewaySettings) -> GatewaySettings:
    """The demo settings on ephemeral ports (tests run in parallel)."""
    data = settings.model_dump()
    for role in ("egress", "ingress"):
        if data.get(role):
            data[role]["port"] = 0
    if data.get("egress"):
        data["egress"]["witness_url"] = None  # the demo's fixed twin port is not this test's
    return GatewaySettings(**data)


async def test_demo_pushes_one_allow_and_two_blocks(tmp_path: Path) -> None:
    # The shipped policies read the SZ recipient from ../var/demo/: mirror that layout.
    shutil.copytree(REPO / "policies", tmp_path / "policies")
    demo = prepare_demo(tmp_path / "var" / "demo", tmp_path / "policies")
    again = prepare_demo(tmp_path / "var" / "demo", tmp_path / "policies")
    assert again == demo  # idempotent: keys and configs are kept
    sz_config = demo.sz_config.read_text()
    assert "[ingress.witness]" in sz_config  # the SZ twin co-signs the HK log
    sz_settings, hk_settings = (_loopback(s) for s in demo.settings())
    async with contextlib.AsyncExitStack() as stack:
        sz = await stack.enter_async_context(running(sz_settings))
        assert sz.ingress_url is not None
        # The demo route points at 127.0.0.1:9443; point it at this test's ingress.
        for policy in (tmp_path / "policies").glob("*.yaml"):
            policy.write_text(policy.read_text().replace("https://127.0.0.1:9443", sz.ingress_url))
        hk = await stack.enter_async_context(running(hk_settings))
        assert hk.egress_url is not None
        text = instructions(demo, hk.egress_url, sz.ingress_url, REPO / "samples")
        assert f"Bearer {DEMO_TOKEN}" in text
        session = await stack.enter_async_context(aiohttp.ClientSession())
        verdicts = {}
        for sample in ("clean.csv", "personal.csv", "genetic.fasta"):
            url = f"{hk.egress_url}/v1/transfers/sz-lab/{sample}"
            async with session.put(
                url,
                data=(REPO / "samples" / sample).read_bytes(),
                headers={"Authorization": f"Bearer {DEMO_TOKEN}"},
            ) as response:
                verdicts[sample] = (response.status, await response.json(content_type=None))
        # The README's review walkthrough: identity card numbers under the PCPD
        # model clauses are held; the demo officer approves them with gateway review.
        assert "gateway review approve" in text
        url = f"{hk.egress_url}/v1/transfers/sz-pdpo/personal.csv"
        async with session.put(
            url,
            data=(REPO / "samples" / "personal.csv").read_bytes(),
            headers={"Authorization": f"Bearer {DEMO_TOKEN}"},
        ) as response:
            assert response.status == 202, await response.text()
            held = await response.json()
        review = ["review", "--url", hk.egress_url, "--token", DEMO_OFFICER_TOKEN]
        listed = await asyncio.to_thread(main, [review[0], "list", *review[1:], "--json"])
        assert listed == 0
        approve = [review[0], "approve", held["transfer_id"], "--comment", "consent on file"]
        assert await asyncio.to_thread(main, [*approve, *review[1:]]) == 0
    pdpo = demo.inbox / "sz-pdpo" / "personal.csv"
    assert pdpo.read_bytes() == (REPO / "samples" / "personal.csv").read_bytes()
    assert verdicts["clean.csv"][0] == 201
    assert verdicts["personal.csv"][0] == 403
    assert verdicts["genetic.fasta"][0] == 403
    assert verdicts["personal.csv"][1]["reason"]
    assert verdicts["genetic.fasta"][1]["labels"]["sensitive.genetic"]["count"] == 3
    inbox = demo.inbox / "sz-lab"
    assert sorted(p.name for p in inbox.iterdir() if p.is_file()) == ["clean.csv"]
    assert (inbox / "clean.csv").read_bytes() == (REPO / "samples" / "clean.csv").read_bytes()


def test_port_in_use_is_one_line(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        policy = (
            "senders: {a: {team: t, organisation: o}}\n"
            "default: {action: block, reason: default deny}\n"
        )
        result = _serve_egress(tmp_path, policy, port)
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr.strip().splitlines()[-1]
    assert "Traceback" not in result.stderr
