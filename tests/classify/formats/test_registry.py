"""The format registry: registration, identification order, isolation helpers (issue 12)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.classify import formats as registry
from gateway.classify.decode import DECODER_FORMATS, FALLBACK_PRIORITY
from gateway.classify.formats import Format, Magic, identify, register, unregister
from gateway.classify.formats.base import Extract, StreamReader
from gateway.classify.formats.testing import RecordingExtract, only_formats, registered


class _Nothing:
    def feed(self, data: bytes) -> None:
        pass

    def finish(self) -> None:
        pass


def _reader(out: Extract) -> StreamReader:
    return _Nothing()


def _format(name: str, magic: bytes, priority: int = 0) -> Format:
    return Format(
        name, "application/x-test", lambda p: p.startswith(magic), stream=_reader, priority=priority
    )


@pytest.fixture(autouse=True)
def decoder_formats_only() -> Iterator[None]:
    with only_formats(*(fmt.name for fmt in DECODER_FORMATS)):
        yield


def test_register_once_per_name_and_unregister() -> None:
    fmt = _format("test-reg", b"TREG")
    register(fmt)
    try:
        assert identify(b"TREG and more") is fmt
        with pytest.raises(ValueError, match="registered twice"):
            register(_format("test-reg", b"OTHER"))
    finally:
        assert unregister("test-reg") is fmt
    assert identify(b"TREG and more") is None
    with pytest.raises(KeyError):
        unregister("test-reg")


def test_a_format_has_exactly_one_kind_of_reader() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        Format("test-none", "application/x-test", lambda p: True)
    with pytest.raises(ValueError, match="exactly one"):
        Format(
            "test-both",
            "application/x-test",
            lambda p: True,
            stream=_reader,
            random=lambda source, out: None,
        )


def test_the_highest_priority_wins_then_the_first_registered() -> None:
    low, first, second, high = (
        _format("test-low", b"SAME", -1),
        _format("test-first", b"SAME"),
        _format("test-second", b"SAME"),
        _format("test-high", b"SAME", 5),
    )
    with registered(low, first, second):
        assert identify(b"SAME") is first
        with registered(high):
            assert identify(b"SAME") is high
        assert identify(b"SAME") is first


def test_a_sniffer_that_raises_does_not_recognise() -> None:
    def broken(prefix: bytes) -> bool:
        return prefix[10] == 0  # IndexError on a short prefix

    fmt = Format("test-broken", "application/x-test", broken, stream=_reader, priority=9)
    fine = _format("test-fine", b"ab")
    with registered(fmt, fine):
        assert identify(b"ab") is fine
        assert identify(b"ab" + bytes(20)) is fmt


def test_registered_removes_its_formats_even_on_error() -> None:
    fmt = _format("test-temporary", b"TTMP")

    def fail_inside() -> None:
        with registered(fmt):
            assert identify(b"TTMP") is fmt
            raise RuntimeError

    with pytest.raises(RuntimeError):
        fail_inside()
    assert "test-temporary" not in registry._REGISTRY


def test_only_formats_isolates_and_restores() -> None:
    outside = _format("test-outside", b"TOUT")
    register(outside)
    try:
        with only_formats("pdf-raw"):
            assert [fmt.name for fmt in registry.formats()] == ["pdf-raw"]
            assert identify(b"TOUT") is None
        assert identify(b"TOUT") is outside
    finally:
        unregister("test-outside")


def test_a_family_reader_outranks_the_decoders_fallback() -> None:
    assert identify(b"%PDF-1.7\n").name == "pdf-raw"  # type: ignore[union-attr]
    assert identify(b"\x89PNG\r\n\x1a\n").name == "png-pixels"  # type: ignore[union-attr]
    assert {f.priority for f in DECODER_FORMATS if f.name.endswith(("-raw", "-pixels"))} == {
        FALLBACK_PRIORITY
    }
    with registered(_format("test-pdf", b"%PDF-"), _format("test-png", b"\x89PNG")):
        assert identify(b"%PDF-1.7\n").name == "test-pdf"  # type: ignore[union-attr]
        assert identify(b"\x89PNG\r\n\x1a\n").name == "test-png"  # type: ignore[union-attr]


def test_encrypted_content_outranks_every_reader() -> None:
    with registered(_format("test-greedy", b"", priority=50)):
        assert identify(b"Salted__12345678").name == "openssl"  # type: ignore[union-attr]
        assert identify(b"age-encryption.org/v1\n-> X25519").name == "age"  # type: ignore[union-attr]
        assert identify(b"anything else").name == "test-greedy"  # type: ignore[union-attr]


def test_the_recording_extract_refuses_a_nested_member_written_after_another_opened() -> None:
    # As the decoder does: it decodes one nested member at a time.
    out = RecordingExtract()
    first = out.nested("a")
    first.write(b"x")
    out.member("b", "text/plain")
    with pytest.raises(AssertionError, match="after another member opened"):
        first.write(b"y")
    text = out.member("c", "text/plain")
    out.nested("d").close()
    text.write("text members may go on: the decoder continues them")


def test_a_format_is_asked_only_about_prefixes_that_start_with_one_of_its_leads() -> None:
    asked: list[bytes] = []

    def sniff(prefix: bytes) -> bool:
        asked.append(prefix)
        return prefix.startswith(b"Q1")

    fmt = Format("test-leads", "application/x-test", sniff, stream=_reader, leads=b"Q")
    with registered(fmt):
        assert identify(b"Q1 data") is fmt
        assert identify(b"X1 data") is None
        assert identify(b"") is None
    assert asked == [b"Q1 data"]


def test_leads_keep_the_sniffing_order() -> None:
    # A higher-priority format with leads still wins where its lead fits, and
    # a lower one without leads is asked where it does not.
    high = Format(
        "test-high-leads",
        "application/x-test",
        lambda p: p.startswith(b"ZZ"),
        stream=_reader,
        priority=5,
        leads=b"Z",
    )
    low = _format("test-low-any", b"Z")
    with registered(low, high):
        assert identify(b"ZZ") is high
        assert identify(b"Z-") is low
    with registered(high):
        low_any = _format("test-any", b"")  # recognises everything, the empty prefix too
        with registered(low_any):
            assert identify(b"") is low_any
            assert identify(b"ZZ") is high


def test_a_magic_sniffer_names_its_leads() -> None:
    fmt = Format("test-magic", "application/x-test", Magic(b"AB", b"CD"), stream=_reader)
    assert fmt.leads == b"AC"
    assert fmt.sniff(b"CDE")
    assert not fmt.sniff(b"DE")
    with registered(fmt):
        assert identify(b"ABx") is fmt
        assert identify(b"CDx") is fmt
        assert identify(b"BAx") is None
    # A magic further in says nothing about the first byte; nor does an empty one.
    assert Format("test-later", "x/y", Magic(b"ftyp", offset=4), stream=_reader).leads is None
    assert Format("test-empty", "x/y", Magic(b"", b"A"), stream=_reader).leads is None
    with pytest.raises(ValueError, match="at least one"):
        Magic()
    with pytest.raises(ValueError, match="leads"):
        Format("test-no-leads", "x/y", lambda p: True, stream=_reader, leads=b"")


def test_an_order_built_while_the_registry_changes_is_not_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    late = _format("test-late", b"QQ")
    building = registry._by_lead

    def changed_meanwhile(ordered: tuple[Format, ...]) -> tuple[tuple[Format, ...], ...]:
        table = building(ordered)
        if "test-late" not in registry._REGISTRY:
            register(late)  # as another thread might, while this table was built
        return table

    registry.changed()
    monkeypatch.setattr(registry, "_by_lead", changed_meanwhile)
    try:
        identify(b"QQ data")  # builds its table from the registry before the change
        assert identify(b"QQ data") is late  # that stale table was not kept
    finally:
        unregister("test-late")


def test_leads_given_with_a_magic_sniffer_must_hold_its_magics() -> None:
    with pytest.raises(ValueError, match="magics' first bytes"):
        Format("test-contradicts", "x/y", Magic(b"AB"), stream=_reader, leads=b"Z")
    with pytest.raises(ValueError, match="magics' first bytes"):
        Format("test-offset", "x/y", Magic(b"ftyp", offset=4), stream=_reader, leads=b"\0")
    assert Format("test-wider", "x/y", Magic(b"AB"), stream=_reader, leads=b"AZ").leads == b"AZ"
