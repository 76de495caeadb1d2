"""hksz-gateway: the cross-boundary data-flow compliance gateway of the Hetao zone.

Research data leaves one park only after it has been classified, judged against
the compliance officers' policies, encrypted to its recipient and recorded in a
tamper-evident audit log. The sans-I/O cores live in :mod:`gateway.classify`,
:mod:`gateway.policy` and :mod:`gateway.crypto`; :mod:`gateway.server` is the thin
asyncio loop that drives them.
"""

from __future__ import annotations

__version__ = "0.1.0"
