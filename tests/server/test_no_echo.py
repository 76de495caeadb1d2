"""Nothing a client sent in which the classifier finds a value comes back (SPEC §3.2, §5).

A file name such as ``scan_<Resident ID>.csv`` is classified with the body:
the transfer is blocked or held *because of* its name, so the status API must
not hand the number back, and a held review's metadata must not keep it in
clear on disk while the review is open. Client-chosen text that is not a
policy word (an unknown route segment, a forward-proxy host) is never echoed
in an error, nor written into a log line.
"""

from __future__ import annotations

import io
import json
import logging
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from gateway.classify.validators import mod11_2_check_char
from gateway.obs.logging import configure_logging
from gateway.server.app import reload_policy
from gateway.server.egress_state import EGRESS, EgressState
from tests.server.conftest import OFFICER_TOKEN, RESEARCH_TOKEN, Parks, start_parks

CLEAN = b"run_id,value\n" + b"".join(f"R{i:05d},{i % 97}\n".encode() for i in range(300))
OFFICER = {"Authorization": f"Bearer {OFFICER_TOKEN}"}
SENDER = {"Authorization": f"Bearer {RESEARCH_TOKEN}"}


def resident_id(region: str, birth: str, sequence: str) -> str:
    """A valid Resident ID number (GB 11643: ISO 7064 MOD 11-2 check character)."""
    body = region + birth + sequence
    return body + chr(mod11_2_check_char(body.encode()))


#: Valid Resident ID numbers (Beijing Chaoyang 1949, Shenzhen Futian 1990).
ID_BEIJING = resident_id("110105", "19491231", "002")
ID_SHENZHEN = resident_id("440304", "19900307", "123")
#: An ID in full-width characters: the classifier folds them (SPEC §3); a log
#: scrubber looking for ASCII digits would not, so only not logging it at all holds.
FULLWIDTH_ID = ID_SHENZHEN.translate({ord(c): ord(c) + 0xFEE0 for c in "0123456789X"})
EMAIL = "li.wei@example.edu.cn"
MOBILE = "13812345678"

#: Rule put first in the test policy: everything on ``sz-review`` is held, so
#: a name holding a Resident ID is held for review rather than blocked.
REVIEW_FIRST = """\
  - id: review.everything
    action: review
    reason: Every transfer on this route is checked by a compliance officer.
    when:
      route: sz-review
"""


def _folded(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


def assert_not_echoed(text: str, *values: str) -> None:
    """No value, nor its identifying digit run, is in ``text`` (full-width folded too)."""
    folded = _folded(text)
    for value in values:
        plain = _folded(value)
        assert plain not in folded, f"{value!r} echoed"
        digits = "".join(c for c in plain if c.isdigit())
        if len(digits) >= 11:  # an ID's first 17 digits, or a mobile number
            assert digits[:17] not in folded, f"the digits of {value!r} echoed"


def _state(parks: Parks) -> EgressState:
    assert parks.hk.egress_app is not None
    return parks.hk.egress_app[EGRESS]


async def _status(parks: Parks, tid: str, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    async with parks.session.get(f"{parks.egress}/v1/transfers/{tid}", headers=headers) as r:
        text = await r.text()
    return r.status, json.loads(text) | {"_raw": text}


async def _review_everything(parks: Parks) -> None:
    path = parks.root / "policies" / "policy.yaml"
    path.write_text(path.read_text().replace("rules:\n", "rules:\n" + REVIEW_FIRST, 1))
    assert parks.hk.egress_app is not None
    result = await reload_policy(parks.hk.egress_app)
    assert result.ok, result.errors
    assert result.changed


def assert_nothing_at_rest(root: Path, name: str, value: str) -> None:
    """No file the HK park keeps (spool, held reviews, audit log, ledger, keys) holds them."""
    needles = {name.encode(), value.encode(), value[:17].encode()}
    files = [p for p in (root / "hk").rglob("*") if p.is_file()]
    assert any(p.parent.name == "held" for p in files)  # the walk does see the held review
    for path in files:
        data = path.read_bytes()
        found = [n for n in needles if n in data]
        assert not found, f"{path} holds {found}"


@pytest.mark.parametrize(
    "name",
    [f"scan_{ID_BEIJING}.csv", f"{ID_SHENZHEN}.jpg", f"scan_{FULLWIDTH_ID}.csv"],
)
async def test_status_withholds_a_name_holding_a_resident_id(parks: Parks, name: str) -> None:
    status, body = await parks.put("sz-lab", name, CLEAN)
    assert status == 403, body
    assert body["rule"] == "block.personal"  # blocked because of its name alone
    assert_not_echoed(json.dumps(body, ensure_ascii=False), name)
    tid = body["transfer_id"]
    for headers in (SENDER, OFFICER):
        code, shown = await _status(parks, tid, headers)
        assert code == 200, shown
        assert shown["state"] == "blocked"
        assert shown["path"] is None
        assert shown["path_withheld"] is True
        assert_not_echoed(shown["_raw"], name)
    # A name in which the classifier found nothing is still shown.
    status, body = await parks.put("sz-lab", "plate_reader.csv", CLEAN)
    assert status == 201, body
    code, shown = await _status(parks, body["transfer_id"], SENDER)
    assert code == 200, shown
    assert (shown["path"], shown["path_withheld"]) == ("plate_reader.csv", False)


@pytest.mark.parametrize("segment", [ID_BEIJING, FULLWIDTH_ID, EMAIL, f"tel-{MOBILE}"])
async def test_an_unknown_route_is_not_echoed(parks: Parks, segment: str) -> None:
    status, body = await parks.put(segment, "a.csv", CLEAN)
    assert status == 404, body
    assert body["type"].endswith("/not-found")
    assert "unknown route" in body["detail"]
    assert_not_echoed(json.dumps(body, ensure_ascii=False), segment)


@pytest.mark.parametrize("host", [f"{ID_BEIJING.lower()}.example", f"{MOBILE}.example.cn"])
async def test_forward_proxy_refusal_does_not_echo_the_host(parks: Parks, host: str) -> None:
    async with parks.session.put(
        f"http://{host}/data.csv", data=CLEAN, headers=SENDER, proxy=parks.egress
    ) as response:
        assert response.status == 403
        text = await response.text()
    assert json.loads(text)["type"].endswith("/forbidden")
    assert_not_echoed(text, host, host.split(".")[0])


async def test_a_held_review_keeps_no_name_in_clear_and_survives_a_restart(
    tmp_path: Path, pki: Path
) -> None:
    name = f"scan_{ID_BEIJING}.csv"
    async with start_parks(tmp_path, pki) as parks:
        await _review_everything(parks)
        status, body = await parks.put("sz-review", name, CLEAN)
        assert status == 202, body
        tid = body["transfer_id"]
        code, shown = await _status(parks, tid, OFFICER)
        assert (code, shown["state"], shown["path"]) == (200, "review", None)
        assert_not_echoed(shown["_raw"], name)
        # While the review is open, nothing the park keeps holds the name.
        assert_nothing_at_rest(tmp_path, name, ID_BEIJING)
        held = sorted(p.name for p in (tmp_path / "hk" / "spool" / "held").iterdir())
        assert held == [f"{tid}.header", f"{tid}.meta.age", f"{tid}.payload"]
    # A new gateway process restores it from the sealed metadata.
    async with start_parks(tmp_path, pki) as parks:
        assert tid in _state(parks).held
        code, shown = await _status(parks, tid, OFFICER)
        assert (code, shown["state"], shown["path_withheld"]) == (200, "review", True)
        assert_not_echoed(shown["_raw"], name)
        assert_nothing_at_rest(tmp_path, name, ID_BEIJING)
        await _review_everything(parks)  # the policy in force at approval holds it too
        async with parks.session.post(
            f"{parks.egress}/v1/reviews/{tid}/approve", json={"comment": "ok"}, headers=OFFICER
        ) as r:
            assert r.status == 201, await r.text()
            assert_not_echoed(await r.text(), name)
        await parks.settle()
        # Approved: delivered under the name the sender gave.
        assert parks.inbox_files("sz-review") == {name: CLEAN}
        assert parks.events_of(tid) == ["review", "approved", "delivered"]
        assert list((tmp_path / "hk" / "spool" / "held").iterdir()) == []


async def test_a_clean_name_held_for_review_is_shown_after_a_restart(
    tmp_path: Path, pki: Path
) -> None:
    async with start_parks(tmp_path, pki) as parks:
        status, body = await parks.put("sz-review", "plate_reader.csv", CLEAN)
        assert status == 202, body
    async with start_parks(tmp_path, pki) as parks:
        code, shown = await _status(parks, body["transfer_id"], OFFICER)
        assert code == 200, shown
        assert (shown["path"], shown["path_withheld"]) == ("plate_reader.csv", False)


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """The gateway's real log pipeline (redaction included) onto a buffer; restored after."""
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    out = io.StringIO()
    configure_logging("json", "debug", stream=out)
    try:
        yield out
    finally:
        structlog.contextvars.clear_contextvars()
        structlog.configure(**saved)
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        root.setLevel(level)


async def test_logs_hold_no_client_sent_identifier(
    parks: Parks, log_lines: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = [ID_BEIJING, FULLWIDTH_ID, EMAIL, MOBILE]
    # A name holding an ID, blocked; an unknown route; a forward-proxy host.
    for value in (ID_BEIJING, FULLWIDTH_ID):
        status, _ = await parks.put("sz-lab", f"scan_{value}.csv", CLEAN)
        assert status == 403
        status, _ = await parks.put(value, "a.csv", CLEAN)
        assert status == 404
    status, _ = await parks.put(EMAIL, "a.csv", CLEAN)
    assert status == 404
    async with parks.session.put(
        f"http://{MOBILE}.example.cn/a.csv", data=CLEAN, headers=SENDER, proxy=parks.egress
    ) as response:
        assert response.status == 403

    # Fault injection: an unexpected error while a transfer named by an ID
    # starts, which the error middleware logs (fail closed: a 500).
    def broken() -> None:
        raise RuntimeError("spool check failed")

    monkeypatch.setattr(_state(parks).spool, "check_space", broken)
    status, _ = await parks.put("sz-lab", f"scan_{FULLWIDTH_ID}.csv", CLEAN)
    assert status == 500
    text = log_lines.getvalue()
    events = [json.loads(line)["event"] for line in text.splitlines()]
    assert "internal_error" in events  # the failure was logged ...
    assert_not_echoed(text, *values)
    assert "/v1/transfers/{route}/{path}" in text  # ... naming its route template
