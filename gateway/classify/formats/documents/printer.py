"""Printer settings inside Office packages (``printerSettings/printerSettings1.bin``).

Office stores the printer set-up of a sheet, deck or document as a binary
part of the package (ECMA-376 Part 1 §15.2.15). PowerPoint and Word save one
in almost every file, and Excel in every sheet with a page set-up, so a
reader that refused it would block every such file as ``content.unscannable``
("binary: unknown format"), the clean ones included. Two layouts exist:

- **Windows**: the printer driver's ``DEVMODEW`` structure (``wingdi.h``):
  the device name and form name (UTF-16, 32 characters each), fixed-size
  numeric fields (orientation, paper size, resolution…), then
  ``dmDriverExtra`` bytes private to the driver.
- **Office for Mac**: a version word (2), then records of a kind, a length
  and an XML property list (``PMPageFormat``, ``PMPrintSettings``).

What is rendered: the device and form names, the runs of printable
characters in the driver's private bytes (UTF-8 or UTF-16,
:func:`~gateway.classify.formats.strings.printable_runs`: drivers keep job
names, user names and paths there), and
the property lists as they are. The numeric fields are printer settings, not
data, and are not rendered; binary numbers inside a driver's private block are
not read (docs/formats.md lists this limit). Anything that does not parse as
one of the two layouts, exactly, is not this format (the decoder then treats
it as an unknown binary, unscannable).
"""

from __future__ import annotations

import struct
from typing import Final

from gateway.classify.formats.base import Extract, Unscannable
from gateway.classify.formats.strings import printable_runs

#: Largest part read: a ``DEVMODEW`` is at most 220 + 65,535 bytes (its
#: driver-extra size is a 16-bit field); Office for Mac's property lists are
#: ~10 KB. Larger is not a printer settings part.
MAX_SETTINGS_BYTES: Final = 1 << 20

#: ``dmSize`` of each ``DEVMODEW`` revision (``dmSpecVersion`` 0x0300 to 0x0401).
_DEVMODE_SIZES: Final = frozenset((148, 156, 188, 212, 220))
_DEVMODE_VERSIONS: Final = frozenset((0x0300, 0x0320, 0x0400, 0x0401))
_NAME_BYTES: Final = 64  # WCHAR[32]
_FORM_NAME_AT: Final = 102  # dmFormName, in every revision from 0x0320 on
_HEADER: Final = struct.Struct("<HHHH")  # spec version, driver version, size, driver extra

_MAC_VERSION: Final = b"\x02\x00\x00\x00"
_MAC_RECORD: Final = struct.Struct("<II")  # kind, length
_MAC_KINDS: Final = frozenset((1, 2))  # page format, print settings
_XML: Final = b"<?xml"  # how each record's property list starts


def _name(raw: bytes) -> str | None:
    """A NUL-padded UTF-16 name, or None if it is not one."""
    try:
        text = raw.decode("utf-16-le")
    except UnicodeDecodeError:
        return None
    name, _, padding = text.partition("\0")
    if not name.isprintable() or padding.strip("\0"):
        return None
    return name


def _devmode(data: bytes) -> tuple[str, str | None, bytes] | None:
    """Device name, form name and driver bytes of a whole ``DEVMODEW``, or None."""
    if len(data) < _NAME_BYTES + _HEADER.size:
        return None
    version, _, size, extra = _HEADER.unpack_from(data, _NAME_BYTES)
    if version not in _DEVMODE_VERSIONS or size not in _DEVMODE_SIZES:
        return None
    if len(data) != size + extra:
        return None
    device = _name(data[:_NAME_BYTES])
    if not device:
        return None
    form = None
    if size >= _FORM_NAME_AT + _NAME_BYTES:
        form = _name(data[_FORM_NAME_AT : _FORM_NAME_AT + _NAME_BYTES])
        if form is None:
            return None
    return device, form, data[size:]


def _mac_records(data: bytes) -> list[bytes] | None:
    """The property lists of Office for Mac's settings, or None if it is not that."""
    if not data.startswith(_MAC_VERSION):
        return None
    records = []
    at = len(_MAC_VERSION)
    while at < len(data):
        if at + _MAC_RECORD.size > len(data):
            return None
        kind, length = _MAC_RECORD.unpack_from(data, at)
        at += _MAC_RECORD.size
        body = data[at : at + length]
        if kind not in _MAC_KINDS or len(body) != length or not body.startswith(_XML):
            return None
        records.append(body)
        at += length
    return records or None


def sniff_printer_settings(prefix: bytes) -> bool:
    """A whole ``DEVMODEW``, or Office for Mac's records, and nothing else.

    The part is small, so the sniff prefix holds all of it: the lengths must
    add up exactly (a Mac file's records may run past a prefix only when the
    part is larger than the prefix, and then its first record must fit).
    """
    if _devmode(prefix) is not None:
        return True
    first = len(_MAC_VERSION)
    if not prefix.startswith(_MAC_VERSION) or len(prefix) < first + _MAC_RECORD.size + len(_XML):
        return False
    kind, length = _MAC_RECORD.unpack_from(prefix, first)
    body = prefix[first + _MAC_RECORD.size :]
    fits = len(_XML) <= length <= MAX_SETTINGS_BYTES
    return kind in _MAC_KINDS and fits and body.startswith(_XML)


class PrinterSettingsReader:
    """Buffers the (small) part and renders it when it ends."""

    def __init__(self, out: Extract) -> None:
        self._out = out
        self._chunks: list[bytes] = []
        self._size = 0

    def feed(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > MAX_SETTINGS_BYTES:
            raise Unscannable(f"printer settings: larger than {MAX_SETTINGS_BYTES} bytes")
        self._chunks.append(data)

    def finish(self) -> None:
        data = b"".join(self._chunks)
        self._chunks.clear()
        devmode = _devmode(data)
        if devmode is not None:
            device, form, driver = devmode
            text = self._out.member("printer settings", "text/plain")
            try:
                text.write(f"{device}\n")
                if form:
                    text.write(f"{form}\n")
                runs = printable_runs(driver)
                if runs:
                    text.write(f"{runs}\n")
            finally:
                text.close()
            return
        records = _mac_records(data)
        if records is None:
            raise Unscannable("printer settings: neither a DEVMODE nor Office for Mac records")
        for n, body in enumerate(records, 1):
            try:
                xml = body.decode("utf-8")
            except UnicodeDecodeError:
                raise Unscannable("printer settings: a property list is not UTF-8") from None
            text = self._out.member(f"printer settings {n}", "text/plain")
            try:
                text.write(xml)
            finally:
                text.close()


def make_printer_settings_reader(out: Extract) -> PrinterSettingsReader:
    """Factory registered for the printer settings part."""
    return PrinterSettingsReader(out)
