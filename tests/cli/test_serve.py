"""``gateway serve`` / ``gateway demo``: config errors, and the demo with the shipped policies."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import shlex
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog

from gateway.audit.note import open_note
from gateway.cli import main
from gateway.policy.loader import load_policy
from gateway.server.config import GatewaySettings, load_settings
from gateway.server.demo import (
    DEMO_TOKEN,
    HK_EGRESS_PORT,
    HK_INGRESS_PORT,
    HK_ORIGIN,
    SZ_DEMO_TOKEN,
    SZ_EGRESS_PORT,
    SZ_HOSPITAL_TOKEN,
    SZ_INGRESS_PORT,
    SZ_ORIGIN,
    ParkUrls,
    instructions,
    prepare_demo,
)
from gateway.server.runner import running
from gateway.server.witness import last_note

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


def _free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports that are free now (held open together while picked)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def _on_ports(settings: GatewaySettings, ports: dict[int, int]) -> GatewaySettings:
    """The demo settings with the demo's fixed ports replaced (tests run in parallel)."""
    data = settings.model_dump()
    for role in ("egress", "ingress"):
        data[role]["port"] = ports[data[role]["port"]]
    url = data["egress"]["witness_url"]
    twin = int(url.rsplit(":", 1)[1])
    data["egress"]["witness_url"] = url.replace(f":{twin}", f":{ports[twin]}")
    return GatewaySettings(**data)


_CURL = re.compile(r"curl -H 'Authorization: Bearer (\S+)' -T (\S+) (\S+)$")


async def _put(session: aiohttp.ClientSession, token: str, sample: str, url: str) -> Any:
    headers = {"Authorization": f"Bearer {token}"}
    data = await asyncio.to_thread(Path(sample).read_bytes)
    async with session.put(url, data=data, headers=headers) as response:
        body = await response.json(content_type=None)
        return response.status, response.content_type, body


async def _review(line: str, transfer_id: str) -> int:
    """Run a ``gateway review`` line of the printed instructions as it is printed."""
    argv = shlex.split(line.strip().replace("<transfer_id>", transfer_id))
    assert argv[0] == "gateway"
    return await asyncio.to_thread(main, argv[1:])


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_file())


#: What the printed pushes get: (token, route/name) -> (status, rule).
_EXPECTED = {
    # Hong Kong -> Shenzhen (PDPO, the demo's research-only route, PCPD model clauses).
    (DEMO_TOKEN, "sz-lab/clean.csv"): (201, "academic-no-personal-allow"),
    (DEMO_TOKEN, "sz-lab/personal.csv"): (403, "demo-sz-lab-research-only"),
    (DEMO_TOKEN, "sz-lab/genetic.fasta"): (403, "demo-sz-lab-research-only"),
    (DEMO_TOKEN, "sz-pdpo/personal.csv"): (202, "pdpo-sensitive-review"),
    # Shenzhen -> Hong Kong (the Mainland export rules, HGR, the GBA Standard Contract).
    (SZ_DEMO_TOKEN, "hk-lab/clean.csv"): (201, "academic-no-personal-allow"),
    (SZ_DEMO_TOKEN, "hk-lab/personal.csv"): (403, "export-sensitive-needs-contract"),
    (SZ_DEMO_TOKEN, "hk-clinical/personal.csv"): (201, "gba-standard-contract-allow"),
    (SZ_HOSPITAL_TOKEN, "hk-lab/human-genome.fasta"): (403, "hgr-export-block"),
    (SZ_DEMO_TOKEN, "hk-lab/human-genome.fasta"): (202, "hgr-whitelist-review"),
}


async def _push_as_printed(text: str) -> dict[tuple[str, str], Any]:
    """Every push the instructions print, in their order, as a user pastes them."""
    verdicts: dict[tuple[str, str], Any] = {}
    async with aiohttp.ClientSession() as session:
        for line in text.splitlines():
            match = _CURL.search(line.strip())
            if match:
                token, sample, url = match.groups()
                path = url.split("/v1/transfers/", 1)[1]
                verdicts[token, path] = await _put(session, token, sample, url)
    return verdicts


async def _approve_as_printed(text: str, verdicts: dict[tuple[str, str], Any]) -> None:
    """The ``gateway review`` lines as printed: both parks' held transfers approved."""
    approve = [line for line in text.splitlines() if "gateway review approve" in line]
    held = [key for key, (status, _) in _EXPECTED.items() if status == 202]
    for key, line in zip(held, approve, strict=True):
        status, _, body = verdicts[key]
        assert status == 202, body
        assert await _review(line, body["transfer_id"]) == 0
    listed = [line for line in text.splitlines() if "gateway review list" in line]
    assert [await _review(line, "") for line in listed] == [0, 0]


def _fixed_ports_to_free(
    policy_dir: Path, settings: list[GatewaySettings]
) -> list[GatewaySettings]:
    """The demo's fixed ports mapped to free ones: settings, witness URLs, route destinations."""
    fixed = (HK_EGRESS_PORT, HK_INGRESS_PORT, SZ_EGRESS_PORT, SZ_INGRESS_PORT)
    ports = dict(zip(fixed, _free_ports(len(fixed)), strict=True))
    for policy in policy_dir.glob("*.yaml"):
        text = policy.read_text()
        for old, new in ports.items():
            text = text.replace(f"https://127.0.0.1:{old}/", f"https://127.0.0.1:{new}/")
        policy.write_text(text)
    return [_on_ports(s, ports) for s in settings]


async def test_demo_runs_both_directions_as_printed(tmp_path: Path) -> None:
    # The shipped policies read the recipients from ../var/demo/: mirror that layout.
    shutil.copytree(REPO / "policies", tmp_path / "policies")
    demo = prepare_demo(tmp_path / "var" / "demo", tmp_path / "policies")
    again = prepare_demo(tmp_path / "var" / "demo", tmp_path / "policies")
    assert again == demo  # idempotent: keys and configs are kept
    sz_settings, hk_settings = _fixed_ports_to_free(tmp_path / "policies", demo.settings())
    reasons = {rule.id: rule.reason for rule in load_policy(tmp_path / "policies").rules}
    async with running(sz_settings) as sz, running(hk_settings) as hk:
        assert sz.egress_url is not None
        assert sz.ingress_url is not None
        assert hk.egress_url is not None
        assert hk.ingress_url is not None
        text = instructions(
            demo,
            ParkUrls(hk.egress_url, hk.ingress_url),
            ParkUrls(sz.egress_url, sz.ingress_url),
            REPO / "samples",
        )
        verdicts = await _push_as_printed(text)
        assert verdicts.keys() == _EXPECTED.keys()
        # Held, and not delivered (the blocked push of the same name neither).
        assert "human-genome.fasta" not in _files(demo.hk_inbox / "hk-lab")
        assert "personal.csv" not in _files(demo.sz_inbox / "sz-pdpo")
        await _approve_as_printed(text, verdicts)
        # Witnessing both ways: each park's ingress co-signs the other's checkpoints.
        assert await hk.witness_now() is not None
        assert await sz.witness_now() is not None
        keys = [hk.services.signer.verifier, sz.services.signer.verifier]
    for witness_dir, origin in (
        (sz_settings.witness_dir, HK_ORIGIN),
        (hk_settings.witness_dir, SZ_ORIGIN),
    ):
        note = last_note(witness_dir, origin)
        assert note is not None, (witness_dir, origin)
        assert open_note(note, keys).signers == {HK_ORIGIN, SZ_ORIGIN}
    for key, (status, content_type, body) in verdicts.items():
        assert (status, body["rule"]) == _EXPECTED[key], key
        if status == 403:  # problem+json, with the rule's legal reason
            assert content_type == "application/problem+json"
            assert body["reason"] == reasons[body["rule"]]
    genetic = verdicts[DEMO_TOKEN, "sz-lab/genetic.fasta"][2]
    assert genetic["labels"]["sensitive.genetic"]["count"] == 3
    # What arrived, byte-identical; nothing of a blocked push.
    arrived = {
        demo.sz_inbox / "sz-lab": ["clean.csv"],
        demo.sz_inbox / "sz-pdpo": ["personal.csv"],
        demo.hk_inbox / "hk-lab": ["clean.csv", "human-genome.fasta"],
        demo.hk_inbox / "hk-clinical": ["personal.csv"],
    }
    for folder, names in arrived.items():
        assert _files(folder) == names, folder
        for name in names:
            assert (folder / name).read_bytes() == (REPO / "samples" / name).read_bytes()


def test_the_readme_pushes_what_make_run_prints(tmp_path: Path) -> None:
    """The README's walkthrough (both directions) is what ``make run`` prints, as written."""
    demo = prepare_demo(tmp_path / "var" / "demo", tmp_path / "policies")
    hk = ParkUrls(f"http://127.0.0.1:{HK_EGRESS_PORT}", f"https://127.0.0.1:{HK_INGRESS_PORT}")
    sz = ParkUrls(f"http://127.0.0.1:{SZ_EGRESS_PORT}", f"https://127.0.0.1:{SZ_INGRESS_PORT}")
    printed = [line.strip() for line in instructions(demo, hk, sz, Path("samples")).splitlines()]
    readme = (REPO / "README.md").read_text().splitlines()
    pushes = [line.split("#", 1)[0].strip() for line in readme if _CURL.search(line.strip())]
    assert {(match.group(1), match.group(3)) for match in map(_CURL.search, pushes) if match} >= {
        (SZ_DEMO_TOKEN, f"{sz.egress}/v1/transfers/hk-lab/human-genome.fasta"),
        (SZ_HOSPITAL_TOKEN, f"{sz.egress}/v1/transfers/hk-lab/human-genome.fasta"),
        (DEMO_TOKEN, f"{hk.egress}/v1/transfers/sz-lab/clean.csv"),
    }
    assert [line for line in pushes if line not in printed] == []
    for line in readme:
        if "gateway review approve" in line and f"--url {sz.egress}" in line:
            assert line.removeprefix(".venv/bin/") in printed
            break
    else:
        raise AssertionError("the README approves no review on the Shenzhen egress")


def test_port_in_use_is_one_line(tmp_path: Path) -> None:
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
