"""Shared test configuration.

Hypothesis profiles, like mitmproxy's: ``fast`` (default, CI) and ``deep``
(``HYPOTHESIS_PROFILE=deep`` for a long local run).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "fast", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "deep", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fast"))
