"""The printer settings part of Office packages (``printerSettings*.bin``).

python-pptx's default template (PowerPoint for Mac's) carries one, as most
decks, documents and page-set-up workbooks do: it must not make a clean file
unscannable, and text hidden in it must still be found.
"""

from __future__ import annotations

import io
import struct
import zipfile

import openpyxl
import pptx
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.classify.formats import identify
from gateway.classify.formats.documents import PPTX, XLSX, printer
from gateway.classify.formats.testing import read_stream
from tests.classify.formats.test_documents import PHONE, RID, labels, mutate, rejects, scan

PART = "ppt/printerSettings/printerSettings1.bin"


def deck(text: str = "Quarterly review") -> bytes:
    presentation = pptx.Presentation()
    slide = presentation.slides.add_slide(presentation.slide_layouts[1])
    slide.shapes.title.text = text
    buffer = io.BytesIO()
    presentation.save(buffer)
    return buffer.getvalue()


def replace_part(package: bytes, name: str, data: bytes) -> bytes:
    """``package`` with member ``name`` replaced (or added) by ``data``."""
    source = zipfile.ZipFile(io.BytesIO(package))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as out:
        for info in source.infolist():
            if info.filename != name:
                out.writestr(info, source.read(info))
        out.writestr(name, data)
    return buffer.getvalue()


def devmode(device: str = "HP LaserJet M506", form: str = "A4", driver: bytes = b"") -> bytes:
    """A ``DEVMODEW`` (spec 0x0401, 220 bytes) followed by ``driver`` private bytes."""
    out = bytearray(220)
    out[:64] = device.encode("utf-16-le").ljust(64, b"\0")
    struct.pack_into("<HHHH", out, 64, 0x0401, 0x0600, 220, len(driver))
    struct.pack_into("<I", out, 72, 0x0001_0F03)  # dmFields
    struct.pack_into("<hhhh", out, 76, 1, 9, 2970, 2100)  # portrait, A4, length, width
    out[102:166] = form.encode("utf-16-le").ljust(64, b"\0")
    return bytes(out) + driver


MAC_SETTINGS = zipfile.ZipFile(io.BytesIO(deck())).read(PART)


def test_pythons_deck_carries_office_for_macs_settings() -> None:
    fmt = identify(MAC_SETTINGS)
    assert fmt is not None
    assert fmt.name == "printer-settings"


def test_a_clean_deck_is_read_not_refused() -> None:
    kind, counts, unscannable = scan(deck())
    assert (kind, counts, unscannable) == (PPTX, {}, ())


def test_a_deck_with_identifiers_on_a_slide() -> None:
    kind, counts, unscannable = scan(deck(f"Patient {RID}, call {PHONE}"))
    assert kind == PPTX
    assert counts == {"pii.cn_resident_id": 1, "pii.cn_phone": 1}
    assert unscannable == ()


def mac_settings(*records: bytes) -> bytes:
    """Office for Mac's layout: version 2, then (kind, length, property list) records."""
    out = b"\x02\x00\x00\x00"
    for kind, body in enumerate(records, 1):
        out += struct.pack("<II", kind, len(body)) + body
    return out


def test_an_identifier_hidden_in_a_property_list_is_found() -> None:
    records = printer._mac_records(MAC_SETTINGS)
    assert records is not None
    assert len(records) == 2
    assert mac_settings(*records) == MAC_SETTINGS
    page, job = records
    job = job.replace(
        b"</dict>\n</plist>", f"<key>owner</key><string>{RID}</string></dict>\n</plist>".encode()
    )
    out = read_stream(printer.make_printer_settings_reader, mac_settings(page, job), 1000)
    assert labels(out) == {"pii.cn_resident_id": 1}
    assert labels(read_stream(printer.make_printer_settings_reader, MAC_SETTINGS)) == {}


def test_a_windows_devmode_in_a_workbook() -> None:
    workbook = openpyxl.Workbook()
    workbook.active.append(["site", "count"])
    workbook.active.append(["Nanshan", 12])
    buffer = io.BytesIO()
    workbook.save(buffer)
    clean = replace_part(buffer.getvalue(), "xl/printerSettings/printerSettings1.bin", devmode())
    assert scan(clean) == (XLSX, {}, ())
    # A driver keeping a job owner's details in its private bytes (UTF-16 and ASCII).
    driver = b"PRIV" + bytes(40) + f"owner {RID}".encode("utf-16-le") + bytes(8) + PHONE.encode()
    planted = replace_part(
        buffer.getvalue(), "xl/printerSettings/printerSettings1.bin", devmode(driver=driver)
    )
    kind, counts, unscannable = scan(planted)
    assert (kind, unscannable) == (XLSX, ())
    assert counts == {"pii.cn_resident_id": 1, "pii.cn_phone": 1}


def test_device_and_form_names_are_rendered() -> None:
    out = read_stream(printer.make_printer_settings_reader, devmode(f"Ward 3 {PHONE}", "A4"))
    assert [m.text for m in out.members] == [f"Ward 3 {PHONE}\nA4\n"]


def test_a_drivers_utf8_text_is_rendered_with_its_chinese_words() -> None:
    """Drivers write UTF-8 as well as UTF-16: the owner's name and the hotword
    before a number are read as text (gateway.classify.formats.strings)."""
    driver = b"PRIV\x01\x02" + f"病人 李四 电话{PHONE}".encode() + bytes(6)
    out = read_stream(printer.make_printer_settings_reader, devmode(driver=driver))
    assert [m.text for m in out.members] == [f"HP LaserJet M506\nA4\nPRIV 病人 李四 电话{PHONE}\n"]


def test_anything_that_does_not_add_up_is_not_printer_settings() -> None:
    good = devmode(driver=bytes(32))
    assert printer.sniff_printer_settings(good)
    assert not printer.sniff_printer_settings(good + b"\0")  # a byte past dmDriverExtra
    assert not printer.sniff_printer_settings(good[:-1])
    assert not printer.sniff_printer_settings(b"\x01" + good[1:])  # device name not text
    assert not printer.sniff_printer_settings(good[:64] + b"\x99\x09" + good[66:])  # version
    # A binary that would be fed raw without this check is refused by the reader too.
    assert rejects(lambda: read_stream(printer.make_printer_settings_reader, good + b"\0"))
    assert rejects(lambda: read_stream(printer.make_printer_settings_reader, MAC_SETTINGS[:-10]))


def test_a_part_larger_than_any_printer_settings_is_refused() -> None:
    big = MAC_SETTINGS + bytes(printer.MAX_SETTINGS_BYTES)
    reason = rejects(lambda: read_stream(printer.make_printer_settings_reader, big, 65536))
    assert reason is not None
    assert "larger than" in reason


@settings(max_examples=60, deadline=None)
@given(
    edits=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), max_size=12),
    cut=st.integers(min_value=0),
    which=st.sampled_from([MAC_SETTINGS, devmode(driver=b"PRIV" + bytes(300))]),
)
def test_mutated_settings_are_read_or_unscannable(
    edits: list[tuple[int, int]], cut: int, which: bytes
) -> None:
    rejects(lambda: read_stream(printer.make_printer_settings_reader, mutate(which, edits, cut)))
    printer.sniff_printer_settings(mutate(which, edits, cut))
