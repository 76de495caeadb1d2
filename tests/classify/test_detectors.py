"""DetectorSet: compilation, immutability, fingerprints, custom detector validation."""

from __future__ import annotations

import threading

import pytest

from gateway.classify import detectors as D
from gateway.classify import labels as L
from gateway.classify.detectors import (
    GENOMIC_TYPES,
    MAX_HOTWORD_WINDOW,
    CustomDetector,
    DetectorError,
    DetectorSet,
)
from gateway.classify.engine import Scanner


def test_builtin_set_knows_every_builtin_label() -> None:
    ds = DetectorSet.build()
    assert ds.labels[: len(L.BUILTIN_LABELS)] == L.BUILTIN_LABELS
    assert ds.custom == ()
    assert sum(ds.personal) == sum(1 for lab in L.BUILTIN_LABELS if lab.startswith("pii."))


def test_fingerprint_is_stable_and_tracks_custom_detectors() -> None:
    a = DetectorSet.build()
    b = DetectorSet.build()
    assert a.fingerprint == b.fingerprint
    det = CustomDetector(label="custom.x", keywords=("alpha",))
    c = DetectorSet.build([det])
    d = DetectorSet.build([CustomDetector(label="custom.x", keywords=("alpha",))])
    e = DetectorSet.build([CustomDetector(label="custom.x", keywords=("beta",))])
    assert c.fingerprint == d.fingerprint != a.fingerprint
    assert e.fingerprint != c.fingerprint
    assert "custom.x" in c.labels


def test_detector_set_is_immutable() -> None:
    ds = DetectorSet.build()
    with pytest.raises(AttributeError):
        ds.fingerprint = "x"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        ds.anything = 1  # type: ignore[attr-defined]


def test_databases_are_compiled_once_per_member_type() -> None:
    ds = DetectorSet.build()
    digit, literal = ds.databases("text/plain")
    assert ds.databases("text/csv") == (digit, literal)
    assert digit is not literal
    for content_type in GENOMIC_TYPES:
        assert ds.databases(content_type) == ds.databases(content_type)
        assert ds.databases(content_type)[0] is digit  # shared by every member type
        assert ds.databases(content_type)[1] is not literal
    assert ds.column_database() == ds.column_database()


@pytest.mark.parametrize(
    ("kwargs", "field", "index"),
    [
        ({"label": "pii.mine", "keywords": ("x",)}, "label", None),
        ({"label": "custom.", "keywords": ("x",)}, "label", None),
        ({"label": "custom.a"}, "patterns", None),
        ({"label": "custom.a", "patterns": ("ok", "(unclosed")}, "patterns", 1),
        ({"label": "custom.a", "patterns": ("a(?=b)",)}, "patterns", 0),  # look-ahead
        ({"label": "custom.a", "keywords": ("x", "")}, "keywords", 1),
        ({"label": "custom.a", "keywords": ("x",), "hotwords": ("y" * 300,)}, "hotwords", 0),
        ({"label": "custom.a", "keywords": ("x",), "validator": "nope"}, "validator", None),
        ({"label": "custom.a", "keywords": ("x",), "window": 0}, "window", None),
        (
            {"label": "custom.a", "keywords": ("x",), "window": MAX_HOTWORD_WINDOW + 1},
            "window",
            None,
        ),
    ],
)
def test_invalid_custom_detectors_name_the_detector(
    kwargs: dict[str, object], field: str, index: int | None
) -> None:
    with pytest.raises(DetectorError) as info:
        CustomDetector(**kwargs)  # type: ignore[arg-type]
    err = info.value
    assert isinstance(err, ValueError)
    assert err.label == kwargs["label"]
    assert err.field == field
    assert err.index == index
    assert str(err).startswith(f"detector {kwargs['label']}: ")


def test_custom_detectors_share_a_label() -> None:
    ds = DetectorSet.build(
        [
            CustomDetector(label="custom.codes", keywords=("alpha",)),
            CustomDetector(label="custom.codes", patterns=(r"B-[0-9]{3}",), personal=True),
        ]
    )
    assert ds.labels.count("custom.codes") == 1
    assert ds.personal[ds.labels.index("custom.codes")]


def test_one_detector_set_serves_concurrent_scanners() -> None:
    ds = DetectorSet.build([CustomDetector(label="custom.k", keywords=("falcon",))])
    text = b"falcon 13812345678 A123456(3) " * 2000
    results: list[object] = []

    def work() -> None:
        scanner = Scanner(ds, b"k" * 32)
        for i in range(0, len(text), 4096):
            scanner.feed(text[i : i + 4096])
        summary = scanner.finish()
        results.append((dict(summary.labels), summary.sha256))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4
    assert all(r == results[0] for r in results)
    labels = results[0][0]  # type: ignore[index]
    assert labels[L.CN_PHONE].count == 2000
    assert labels["custom.k"].count == 2000


def test_every_pattern_is_compiled_into_exactly_one_database() -> None:
    # Which database a pattern goes to is a speed choice (module docstring);
    # a pattern in neither would never match.
    detectors = DetectorSet.build([CustomDetector(label="custom.x", patterns=("X-[0-9]{4}",))])
    scanned = detectors.specs[: detectors.genetic_run_id]
    digit = {i for i, s in enumerate(scanned) if s.database == D.DB_DIGIT}
    literal = {i for i, s in enumerate(scanned) if s.database == D.DB_LITERAL}
    assert digit.isdisjoint(literal)
    assert digit | literal == set(range(len(scanned)))
    assert all(s.database == D.DB_LITERAL for s in scanned if s.kind == D.K_CUSTOM_REGEX)
