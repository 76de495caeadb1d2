"""Fixtures shared by the classifier tests."""

from __future__ import annotations

import pytest

from gateway.classify import charset, matcher
from gateway.classify.decode import transforms


@pytest.fixture(params=["native", "python"])
def matcher_core(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test once with the compiled matcher core and once with the Python reference.

    Modules opt in with ``pytestmark = pytest.mark.usefixtures("matcher_core")``:
    every expectation then holds for both implementations.
    """
    if request.param == "native":
        if not matcher.NATIVE_AVAILABLE:
            pytest.fail("the compiled matcher core is not built (pip install -e .)")
    else:
        monkeypatch.setattr(matcher, "_native", None)
        monkeypatch.setattr(charset, "_fold_native", None)
        monkeypatch.setattr(transforms, "_next_run", None)
        monkeypatch.setattr(transforms, "_find_any", None)
    return request.param
