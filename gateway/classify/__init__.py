"""The streaming classifier (SPEC §3): sans-I/O, Hyperscan-based, chunk-invariant.

Public API::

    detectors = DetectorSet.build(custom=[CustomDetector(...)])  # once per policy version
    scanner = Scanner(detectors, secret=key32)  # one per transfer
    for chunk in chunks:
        scanner.feed(chunk)
    summary: ScanSummary = scanner.finish()

Nothing in this package does I/O or imports asyncio/aiohttp (ruff TID251).
"""

from __future__ import annotations

from gateway.classify.decode import ScanLimits
from gateway.classify.detectors import CustomDetector, DetectorError, DetectorSet
from gateway.classify.engine import Scanner
from gateway.classify.summary import ContentInfo, LabelStats, ScanSummary

__all__ = [
    "ContentInfo",
    "CustomDetector",
    "DetectorError",
    "DetectorSet",
    "LabelStats",
    "ScanLimits",
    "ScanSummary",
    "Scanner",
]
