"""Publishing a multi-file policy edit at once (issue 15): policy_reload = "publish"."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.server.conftest import start_parks

#: The watcher looks every POLICY_POLL_SECONDS (2 s); give it three looks.
WAIT_SECONDS = 6.5


async def test_edits_go_live_only_when_published(tmp_path: Path, pki: Path) -> None:
    async with start_parks(tmp_path, pki, egress={"policy_reload": "publish"}) as parks:
        assert parks.hk.egress_app is not None
        holder_version = _version(parks)
        path = parks.root / "policies" / "policy.yaml"
        path.write_text(path.read_text().replace("Default deny.", "Nothing else passes."))
        await asyncio.sleep(WAIT_SECONDS)
        assert _version(parks) == holder_version  # edited, not published
        (parks.root / "policies" / ".publish").write_text("")
        await asyncio.sleep(WAIT_SECONDS)
        published = _version(parks)
        assert published != holder_version
        # A touch publishes again (nothing changed: the same version stays).
        (parks.root / "policies" / ".publish").touch()
        await asyncio.sleep(WAIT_SECONDS)
        assert _version(parks) == published


def _version(parks: object) -> str:
    from gateway.server.app import POLICY

    app = parks.hk.egress_app  # type: ignore[attr-defined]
    return str(app[POLICY].current().version)
