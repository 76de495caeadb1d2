"""Medical imaging reader: DICOM (issue 12; SPEC §3.1 ``sensitive.health``).

A DICOM file (PS3.10) is a 128-byte preamble, ``DICM``, the file meta group
(explicit VR little endian) and a data set in the transfer syntax the meta
group names. Data elements come in tag order, so everything but a few
trailing elements (Data Set Trailing Padding, Digital Signatures) precedes the
Pixel Data element (7FE0,0010), which is most of the file.

The reader walks the element structure as the bytes arrive (PS3.5 §7: tags,
VRs, lengths, sequences and items of defined and undefined length, encapsulated
fragments), checking that every element is whole and every container closes,
and keeps the data elements in a bounded buffer. It never keeps pixel data or
other large binary values (their bytes are skipped as they stream past); an
Encapsulated Document (a PDF or CDA report inside DICOM) is handed back to the
decoder as a nested member. At the end pydicom decodes the kept elements (it
knows the data dictionary, the character sets and the value
representations), and the reader:

* renders every text attribute (patient, study, institution, physician,
  descriptions, private text; numbers of up to :data:`MAX_NUMBER_VALUES`
  values) as ``name: value`` lines in a ``text/plain`` member, person names in
  caret form with spaces (``Zhang^San`` -> ``Zhang San``) and dates as ISO
  dates, so the text detectors see identifiers and phone numbers in them;
* renders the text held in private values, at any depth, in a second
  ``text/plain`` member, ``dicom private attributes``: one line per element,
  ``(0029,1010): run run …`` (the tags of the enclosing sequences first,
  ``(0008,1140) > (0029,1010): …``). Vendors keep whole text blocks in
  elements of private tags, and of public tags the dictionary does not know,
  whose VR is binary or numeric (Siemens CSA headers, GE and Philips blocks,
  UN values of implicit-VR files: :meth:`_Walker._examined`); the walker
  buffers each such value alone instead of keeping it for pydicom, bounded
  (:data:`MAX_PRIVATE_VALUE`, :data:`MAX_PRIVATE_BYTES`: past them the file is
  unscannable), and takes its runs of UTF-8 and UTF-16LE text
  (:func:`printable_runs`). An identifier there is found by the text detectors
  like one in a public attribute;
* reports one ``sensitive.health`` finding for an instance that identifies
  its patient (:func:`identifies_patient`), keyed by the patient
  (:func:`patient_key`) so that a series of one patient counts one distinct
  subject. A DICOMDIR counts each patient record it lists. The rule reads
  the standard's attributes only: text in private values counts as the
  detectors' findings (a Resident ID is ``pii.cn_resident_id``), not as a
  patient of its own (a reader cannot tell which run names the patient).

Pixel data is never read: text burned into the pixels (annotations on
ultrasound and secondary captures) is not seen (documented limit); nor are
other public binary values (overlays, waveform samples, lookup tables).
"""

from __future__ import annotations

import io
import logging
import re
import struct
import warnings
import zlib
from collections.abc import Iterator
from types import ModuleType
from typing import TYPE_CHECKING, Final

from gateway.classify.formats import Format, register
from gateway.classify.formats.base import BinaryOut, Extract, LazyModule, TextOut, Unscannable
from gateway.classify.formats.strings import printable_runs

# Hostile files make pydicom warn and log about invalid values, quoting them
# (an unknown character set's name, a value that is not a UID); the reader
# reports its own reasons, and logs never carry payload (STYLE §8). pydicom is
# used by this reader alone in the gateway's process.
logging.getLogger("pydicom").disabled = True
warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")


def _configure(_: ModuleType) -> None:
    """pydicom's process-wide settings, made when its first module loads (before
    any reading): invalid values are ignored, not warned about or raised, and a
    number whose length is not a multiple of its size (a hostile group length)
    is read as UN bytes instead of raising pydicom's own exception."""
    import pydicom.config

    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    pydicom.config.convert_wrong_length_to_UN = True


# pydicom loads when a DICOM file arrives (LazyModule: with the numpy and Pillow
# it imports, ~30 MB of RSS that a gateway without DICOM files does not carry).
if TYPE_CHECKING:
    import pydicom.datadict as dicom_datadict
    import pydicom.dataset as dicom_dataset
    import pydicom.filereader as dicom_filereader
    import pydicom.multival as dicom_multival
    import pydicom.valuerep as dicom_valuerep
    from pydicom.dataset import Dataset
else:
    dicom_datadict = LazyModule("pydicom.datadict", _configure)
    dicom_dataset = LazyModule("pydicom.dataset", _configure)
    dicom_filereader = LazyModule("pydicom.filereader", _configure)
    dicom_multival = LazyModule("pydicom.multival", _configure)
    dicom_valuerep = LazyModule("pydicom.valuerep", _configure)

# --------------------------------------------------------------------------- limits

#: Data element bytes kept for pydicom (everything but pixel data and large
#: binary values). A CT or MR header is 2-10 KB; enhanced multi-frame headers
#: (per-frame functional groups) and DICOMDIRs of large archives reach a few
#: MiB; pydicom's objects take about three times the kept bytes.
MAX_KEPT_BYTES: Final = 8 << 20
#: A top-level binary value (OB, OW, OF, OD, OL, OV, UN) of a public tag
#: longer than this is skipped unread, not kept: overlays, waveforms, lookup
#: tables. Private values are examined instead (:data:`MAX_PRIVATE_VALUE`).
MAX_KEPT_BINARY: Final = 64 << 10
#: The file meta group (PS3.10 §7.1) is a few hundred bytes.
MAX_META_BYTES: Final = 64 << 10
#: Data elements walked, at every depth (a header has hundreds; 100 000 is a
#: DICOMDIR of tens of thousands of records).
MAX_ELEMENTS: Final = 100_000
#: Open sequences and items at once. Structured reports nest deepest: a
#: content tree of ten levels is twenty; 64 keeps pydicom's recursion shallow.
MAX_NESTING: Final = 64
#: Characters rendered for the detectors, in total.
MAX_RENDERED_CHARS: Final = 16 << 20
#: Characters of one rendered value (an LT/UT report is at most ~10 KB; UT may
#: claim 4 GiB).
MAX_VALUE_CHARS: Final = 64 << 10
#: DS/IS values (decimal and integer strings) rendered when an element has at
#: most this many: single measurements can hide digits, contour data
#: (millions of coordinates) is numeric data.
MAX_NUMBER_VALUES: Final = 16
#: Deflated transfer syntax: sustained expansion ratio past which the data
#: set is a bomb (SPEC §3.1 "ratio > 100:1"), after a grace for small files.
MAX_INFLATE_RATIO: Final = 100
INFLATE_GRACE: Final = 1 << 20
#: Bytes allowed after a deflated data set: the padding to an even length
#: (PS3.5 A.5), or the 8-byte gzip trailer (CRC-32, size) some old tools
#: (DCTOOL) wrote. More would be data no DICOM reader sees.
MAX_DEFLATE_TRAILER: Final = 8
#: Bytes of one private value examined for text (:func:`printable_runs`; private
#: here also means a public tag the dictionary does not know). Vendor headers
#: are far smaller: a Siemens CSA Image Header is 5-15 KB, a CSA Series Header
#: with its MrPhoenixProtocol 50-300 KB, GE and Philips binary blocks a few
#: KB. A larger value is vendor bulk data (ultrasound raw data, tomosynthesis
#: projections, spectroscopy samples) that the reader cannot vouch for:
#: unscannable, not skipped. The value is buffered whole while it streams in.
MAX_PRIVATE_VALUE: Final = 4 << 20
#: Private value bytes examined in one instance, in all: a header holds well
#: under 1 MiB (an enhanced multi-frame header's private functional groups are
#: small values, thousands of frames of them a few hundred KB). The
#: examination runs at 15-30 MB/s on random bytes, its worst case (text:
#: 70-200 MB/s, on the development machine): about half a second at most.
MAX_PRIVATE_BYTES: Final = 8 << 20

# --------------------------------------------------------------------------- syntax

IMPLICIT_LE: Final = "1.2.840.10008.1.2"
EXPLICIT_LE: Final = "1.2.840.10008.1.2.1"
EXPLICIT_BE: Final = "1.2.840.10008.1.2.2"
DEFLATED_LE: Final = "1.2.840.10008.1.2.1.99"
#: VRs with a 2-byte reserved field and a 4-byte length (PS3.5 §7.1.2).
_LONG_VRS: Final = frozenset(
    (b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV")
)
_BINARY_VRS: Final = frozenset(("OB", "OD", "OF", "OL", "OV", "OW", "UN"))
_UNDEFINED: Final = 0xFFFFFFFF
_ITEM: Final = 0xFFFEE000
_ITEM_END: Final = 0xFFFEE00D
_SEQUENCE_END: Final = 0xFFFEE0DD
#: Pixel Data and its float variants (PS3.3 C.7.6.3), never kept.
_PIXEL_TAGS: Final = frozenset((0x7FE00010, 0x7FE00008, 0x7FE00009))
#: Encapsulated Document (PS3.3 C.24.2): a PDF, CDA or other file inside DICOM.
_ENCAPSULATED_DOCUMENT: Final = 0x00420011
_VR_RE: Final = re.compile(rb"[A-Z]{2}")

# --------------------------------------------------------------------------- patients

#: Attributes that identify a patient (PS3.15 Annex E, Table E.1-1: the
#: Patient Module attributes the Basic Profile removes or replaces), with the
#: Patient IDs in Other Patient IDs Sequence items.
IDENTIFYING: Final = (
    "PatientName",
    "PatientID",
    "OtherPatientIDs",
    "OtherPatientNames",
    "PatientBirthName",
    "PatientMotherBirthName",
    "PatientBirthDate",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "MedicalRecordLocator",
)
#: Values de-identification tools put in place of an identity (upper case,
#: carets and spaces removed): they identify no one.
DUMMY_VALUES: Final = frozenset(
    (
        "",
        "ANON",
        "ANONYMOUS",
        "ANONYMIZED",
        "ANONYMISED",
        "DEIDENTIFIED",
        "DE-IDENTIFIED",
        "REMOVED",
        "REDACTED",
        "UNKNOWN",
        "NONE",
        "NULL",
        "NA",
        "N/A",
        "19000101",
    )
)
#: A value made only of these characters is a placeholder ("XXXX", "0000", "***").
_FILLER: Final = frozenset("0X*?-_.")


def _norm(value: str) -> str:
    return re.sub(r"[\s^=]+", "", value).upper()


def is_dummy(value: str) -> bool:
    """True when ``value`` is empty or a de-identification placeholder."""
    norm = _norm(value)
    return norm in DUMMY_VALUES or set(norm) <= _FILLER


def identifies_patient(ds: Dataset, removed: bool = False) -> bool:
    """Whether ``ds`` (an instance or a DICOMDIR patient record) identifies its patient.

    PS3.15 Annex E: an instance whose Patient Identity Removed (0012,0062) is
    ``YES`` has been de-identified (its identifying attributes were removed
    or replaced by pseudonyms). Otherwise it identifies its patient when any
    :data:`IDENTIFYING` attribute holds a value that is not a placeholder
    (:func:`is_dummy`). ``removed`` carries the flag of an enclosing data set.
    """
    if removed or _text(ds, "PatientIdentityRemoved").strip().upper() == "YES":
        return False
    if any(not is_dummy(_text(ds, keyword)) for keyword in IDENTIFYING):
        return True
    return any(not is_dummy(_text(item, "PatientID")) for item in _items(ds, _OTHER_IDS))


#: Other Patient IDs Sequence (0010,1002): the patient's IDs at other issuers.
_OTHER_IDS: Final = "OtherPatientIDsSequence"


def _items(ds: Dataset, keyword: str) -> list[Dataset]:
    """The items of a sequence attribute ([] when absent or unreadable)."""
    try:
        elem = ds.data_element(keyword)
        value = elem.value if elem is not None else None
    except _VALUE_ERRORS:
        return []
    return [item for item in value or () if isinstance(item, dicom_dataset.Dataset)]


def patient_key(ds: Dataset) -> bytes:
    """The patient as distinct-count key: Patient ID with its issuer, else name and
    birth date, else every identifying value (never stored: only hashed)."""
    pid = _text(ds, "PatientID")
    if not is_dummy(pid):
        return (
            b"dicom-id\x00"
            + _norm(_text(ds, "IssuerOfPatientID")).encode()
            + b"\x00"
            + (_norm(pid).encode())
        )
    name = _text(ds, "PatientName")
    if not is_dummy(name):
        birth = _norm(_text(ds, "PatientBirthDate"))
        return b"dicom-name\x00" + _norm(name).encode() + b"\x00" + birth.encode()
    values = [_norm(_text(ds, k)) for k in IDENTIFYING]
    return b"dicom-other\x00" + "\x00".join(values).encode()


def _text(ds: Dataset, keyword: str) -> str:
    """An attribute as one string ("" when absent or unreadable)."""
    try:
        elem = ds.data_element(keyword)
        value = elem.value if elem is not None else None
    except _VALUE_ERRORS:
        return ""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, (list, dicom_multival.MultiValue)):
        return "\\".join(str(v) for v in value)
    return str(value)


#: What pydicom raises converting a hostile value (a charset it does not
#: know, a number that is not one, a truncated sequence).
_VALUE_ERRORS: Final = (
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    LookupError,
    UnicodeError,
    struct.error,
    AttributeError,
    NotImplementedError,
    OverflowError,
    EOFError,
    OSError,
    RecursionError,
)

# --------------------------------------------------------------------------- walker


class _Frame:
    """An open sequence, item or fragment list: its kind, end (None when
    undefined), whether its content is implicit VR, and the tag of its
    element (0 for an item)."""

    __slots__ = ("end", "implicit", "kind", "tag")

    def __init__(self, kind: str, end: int | None, implicit: bool, tag: int = 0) -> None:
        self.kind = kind
        self.end = end
        self.implicit = implicit
        self.tag = tag


class _Walker:
    """Walks a data set's elements as bytes arrive, keeping all but pixel data.

    Resumable at any byte: ``feed`` appends, walks as far as the bytes go.
    ``kept`` holds the whole elements pydicom will decode; skipped values
    never enter memory. A top-level Encapsulated Document streams to
    ``nested`` (opened on demand). The value of a private element (at any
    depth) that pydicom would not render as text (:meth:`_examined`) is not
    kept: it is buffered alone, bounded, and its text runs become one line of
    ``private`` (:func:`printable_runs`).
    """

    def __init__(self, implicit: bool, little: bool, out: Extract) -> None:
        self.implicit = implicit
        self.little = little
        self.out = out
        self.kept = bytearray()
        self._pending = bytearray()
        self._pos = 0  # body offset of _pending[0]
        self._stack: list[_Frame] = []
        self._value_left = 0
        self._drop = False
        self._sink: BinaryOut | None = None
        self._elements = 0
        self.private: list[str] = []  # "(gggg,eeee): runs" lines
        self._private_bytes = 0
        self._blob: bytearray | None = None  # the private value being read
        self._blob_depth = 0
        self._blob_path = ""
        # The public dictionary by tag (re-exported by pydicom.datadict, where
        # its documentation names it); get_entry would cost a Tag per element.
        self._dictionary = dicom_datadict.DicomDictionary  # type: ignore[attr-defined]
        self._u16 = struct.Struct("<H" if little else ">H")
        self._u32 = struct.Struct("<I" if little else ">I")
        self._tag = struct.Struct("<HH" if little else ">HH")

    def feed(self, data: bytes) -> None:
        if self._value_left:
            data = self._value(data)
        if data:
            self._pending += data
        self._walk()

    def finish(self) -> None:
        self._walk()
        if self._value_left or self._pending or self._stack:
            raise Unscannable("dicom: truncated data set")
        self._close_sink()

    def _value(self, data: bytes) -> bytes:
        """Consume the current value's bytes from ``data``; return the rest."""
        take = min(self._value_left, len(data))
        self._take(data[:take])
        self._value_left -= take
        if not self._value_left:
            self._element_done()
        return data[take:]

    def _take(self, data: bytes | bytearray) -> None:
        self._pos += len(data)
        if self._sink is not None:
            self._sink.write(bytes(data))
        elif self._blob is not None:
            self._blob += data
        elif not self._drop:
            self.kept += data

    def _close_sink(self) -> None:
        if self._sink is not None:
            self._sink.close()
            self._sink = None

    def _element_done(self) -> None:
        """A value (or a container) ended: finish what was done with its bytes."""
        if self._blob is not None and len(self._stack) == self._blob_depth:
            text = printable_runs(bytes(self._blob))
            if text:
                self.private.append(f"{self._blob_path}: {text}\n")
            self._blob = None
        if not self._stack:
            self._drop = False
            self._close_sink()

    def _walk(self) -> None:
        pending = self._pending
        at = 0
        while True:
            if self._value_left:
                take = min(self._value_left, len(pending) - at)
                self._take(pending[at : at + take])
                at += take
                self._value_left -= take
                if self._value_left:
                    break
                self._element_done()
                continue
            if self._pop_ended():
                continue
            need = self._header_size(pending, at)
            if need is None or len(pending) - at < need:
                break
            at = self._element(pending, at, need)
        del pending[:at]

    def _pop_ended(self) -> bool:
        """Close defined-length containers that end here; True if one did."""
        if self._stack and self._stack[-1].end is not None:
            end = self._stack[-1].end
            if self._pos > end:
                raise Unscannable("dicom: element overruns its sequence")
            if self._pos == end:
                self._stack.pop()
                self._element_done()
                return True
        return False

    def _header_size(self, pending: bytearray, at: int) -> int | None:
        if len(pending) - at < 8:
            return None
        group = self._tag.unpack_from(pending, at)[0]
        implicit = self._stack[-1].implicit if self._stack else self.implicit
        if group == 0xFFFE or implicit:
            return 8
        return 12 if bytes(pending[at + 4 : at + 6]) in _LONG_VRS else 8

    def _element(self, pending: bytearray, at: int, size: int) -> int:
        group, elem = self._tag.unpack_from(pending, at)
        tag = group << 16 | elem
        frame = self._stack[-1] if self._stack else None
        implicit = frame.implicit if frame is not None else self.implicit
        self._elements += 1
        if self._elements > MAX_ELEMENTS:
            raise Unscannable(f"dicom: more than {MAX_ELEMENTS} data elements")
        if group == 0xFFFE:
            length = self._u32.unpack_from(pending, at + 4)[0]
            if self._blob is not None:
                self._pos += 8  # a fragment's item header: not text of the value
            else:
                self._take(pending[at : at + 8])
            self._delimiter(tag, length, frame, implicit)
            return at + 8
        if frame is not None and frame.kind != "item":
            raise Unscannable("dicom: data element outside an item")
        known = None
        if implicit:
            length = self._u32.unpack_from(pending, at + 4)[0]
            try:
                vr = dicom_datadict.dictionary_VR(tag)
                known = True
            except KeyError:
                vr, known = "UN", False
        else:
            raw_vr = bytes(pending[at + 4 : at + 6])
            if not _VR_RE.fullmatch(raw_vr):
                raise Unscannable("dicom: invalid value representation")
            vr = raw_vr.decode("ascii")
            if size == 12:
                length = self._u32.unpack_from(pending, at + 8)[0]
            else:
                length = self._u16.unpack_from(pending, at + 6)[0]
        if self._examined(tag, vr, length, known):
            self._examine(tag, length)
            self._pos += size  # the value is examined here, not decoded by pydicom
        else:
            if frame is None:
                self._top_level(tag, vr, length)
            if self._drop or self._sink is not None:
                self._pos += size  # the header of a skipped element is not kept either
            else:
                self._keep_check(size + (0 if length == _UNDEFINED else length))
                self._take(pending[at : at + size])
        if length == _UNDEFINED:
            if tag in _PIXEL_TAGS or vr in ("OB", "OW"):
                self._push("fragments", None, implicit, tag)
            elif vr in ("SQ", "UN") or implicit:
                # UN of undefined length: a sequence in implicit VR (PS3.5 §6.2.2).
                self._push("sequence", None, implicit or vr == "UN", tag)
            else:
                raise Unscannable("dicom: undefined length on a non-sequence")
        elif vr == "SQ":
            self._push("sequence", self._pos + length, implicit, tag)
        else:
            self._within(self._pos + length)
            self._value_left = length
            if not length:
                self._element_done()
        return at + size

    def _top_level(self, tag: int, vr: str, length: int) -> None:
        """Decide what becomes of a top-level element's bytes."""
        if tag in _PIXEL_TAGS:
            self._drop = True
        elif tag == _ENCAPSULATED_DOCUMENT and length not in (0, _UNDEFINED):
            self._sink = self.out.nested("encapsulated document")
        elif vr in _BINARY_VRS and length != _UNDEFINED and length > MAX_KEPT_BINARY:
            self._drop = True

    def _keep_check(self, more: int) -> None:
        if len(self.kept) + more > MAX_KEPT_BYTES:
            raise Unscannable(f"dicom: data elements over {MAX_KEPT_BYTES >> 20} MiB")

    def _examined(self, tag: int, vr: str, length: int, known: bool | None) -> bool:
        """Whether the value of element ``tag`` is examined as bytes (:func:`printable_runs`).

        It is when the element is private (odd group) or its public tag is not
        in the dictionary (``known``: the lookup made in implicit VR, None
        when not made), and pydicom would not render its value as text: the
        binary VRs (OB, OW, OD, OF, OL, OV, UN; in implicit VR every private
        element is UN) and the numbers, UIDs and tags (US, UL, SS, SL, SV, UV,
        FL, FD, AT, UI), which is where vendors keep text blocks (Siemens CSA
        headers, GE and Philips private blocks). Not examined: group lengths
        (gggg,0000); private creators read as UN (gggg,0010-00FF: LO by
        definition, so pydicom reads and the renderer shows them); sequences
        (their items are walked, their elements decided one by one); public
        tags the dictionary knows (pixel data, overlays, waveforms, lookup
        tables: bulk samples with a meaning, not text).
        """
        if vr in _SHOWN_VRS or not tag & 0xFFFF:
            return False
        if length == _UNDEFINED and vr not in ("OB", "OW"):
            return False  # a sequence (UN, or any VR in implicit VR): walked
        if tag >> 16 & 1:
            return not (vr == "UN" and 0x10 <= tag & 0xFFFF <= 0xFF)
        if known is None:
            known = tag in self._dictionary or _repeating(tag)
        return not known

    def _examine(self, tag: int, length: int) -> None:
        """Buffer the value of private element ``tag`` for :func:`printable_runs`."""
        self._private_check(0 if length == _UNDEFINED else length, 0)
        path = [frame.tag for frame in self._stack if frame.tag]
        self._blob_path = " > ".join(_tag_name(t) for t in [*path, tag])
        self._blob = bytearray()
        self._blob_depth = len(self._stack)

    def _private_check(self, more: int, held: int) -> None:
        """``more`` bytes of a private value of which ``held`` are read: bounded."""
        if held + more > MAX_PRIVATE_VALUE:
            raise Unscannable(f"dicom: private attribute over {MAX_PRIVATE_VALUE >> 20} MiB")
        self._private_bytes += more
        if self._private_bytes > MAX_PRIVATE_BYTES:
            raise Unscannable(f"dicom: private attributes over {MAX_PRIVATE_BYTES >> 20} MiB")

    def _push(self, kind: str, end: int | None, implicit: bool, tag: int = 0) -> None:
        if len(self._stack) >= MAX_NESTING:
            raise Unscannable(f"dicom: sequences nested deeper than {MAX_NESTING}")
        if end is not None:
            self._within(end)
        self._stack.append(_Frame(kind, end, implicit, tag))

    def _within(self, end: int) -> None:
        """A value or container ending at ``end`` must end inside its enclosing ones."""
        for frame in reversed(self._stack):
            if frame.end is not None:
                if end > frame.end:
                    raise Unscannable("dicom: element overruns its sequence")
                return

    def _delimiter(self, tag: int, length: int, frame: _Frame | None, implicit: bool) -> None:
        if tag == _ITEM and frame is not None and frame.kind == "sequence":
            self._push("item", None if length == _UNDEFINED else self._pos + length, implicit)
        elif tag == _ITEM and frame is not None and frame.kind == "fragments":
            if length == _UNDEFINED:
                raise Unscannable("dicom: fragment of undefined length")
            if self._blob is not None:
                self._private_check(length, len(self._blob))
            self._value_left = length
        elif tag == _ITEM_END and frame is not None and frame.kind == "item" and frame.end is None:
            self._stack.pop()
        elif (
            tag == _SEQUENCE_END
            and frame is not None
            and frame.kind in ("sequence", "fragments")
            and frame.end is None
        ):
            self._stack.pop()
            self._element_done()
        else:
            raise Unscannable("dicom: misplaced item or delimiter")


# --------------------------------------------------------------------------- reader


class DicomReader:
    """Streaming DICOM reader (a StreamReader): attributes as text, patients as findings."""

    def __init__(self, out: Extract) -> None:
        self.out = out
        self._head = bytearray()
        self._walker: _Walker | None = None
        self._inflater: zlib._Decompress | None = None
        self._in = 0
        self._inflated = 0
        self._syntax = ""
        self._padding = 0

    def feed(self, data: bytes) -> None:
        """The next bytes of the member."""
        if self._walker is None:
            self._head += data
            self._start(final=False)
            if self._walker is None and len(self._head) > MAX_META_BYTES + 132:
                raise Unscannable("dicom: file meta group too long")
        elif data:
            self._body(data)

    def finish(self) -> None:
        """The member ended: decode the kept elements and report."""
        if self._walker is None:
            self._start(final=True)
        if self._walker is None:
            raise Unscannable("dicom: truncated file meta group")
        if self._inflater is not None and not self._inflater.eof:
            raise Unscannable("dicom: truncated deflated data set")
        self._walker.finish()
        self._report(self._decode(self._walker))

    def _start(self, final: bool) -> None:
        """Find the data set: after the preamble and the meta group, if any."""
        head = self._head
        if len(head) < 132 and not final:
            return
        at = 132 if head[128:132] == b"DICM" else 0
        syntax = None
        while True:
            if len(head) - at < 8:
                if final:
                    break
                return
            if head[at : at + 2] != b"\x02\x00":
                break
            vr = bytes(head[at + 4 : at + 6])
            if vr in _LONG_VRS:
                if len(head) - at < 12:
                    return
                size, length = 12, int.from_bytes(head[at + 8 : at + 12], "little")
            else:
                size, length = 8, int.from_bytes(head[at + 6 : at + 8], "little")
            if not _VR_RE.fullmatch(vr) or length > MAX_META_BYTES:
                raise Unscannable("dicom: corrupt file meta group")
            if len(head) - at < size + length:
                if final:
                    raise Unscannable("dicom: truncated file meta group")
                return
            if head[at + 2 : at + 4] == b"\x10\x00":  # (0002,0010) Transfer Syntax UID
                value = bytes(head[at + size : at + size + length])
                syntax = value.rstrip(b"\x00 ").decode("ascii", "replace")
            at += size + length
        if len(head) - at < 6 and not final:
            return  # the data set's first element header says how it is encoded
        implicit = syntax == IMPLICIT_LE
        if syntax not in (EXPLICIT_BE, DEFLATED_LE):
            # As pydicom does: the encoding the first element shows wins over the
            # one declared (writers put compressed-pixel syntaxes on implicit
            # data sets), and a bare data set declares none.
            implicit = not (len(head) - at >= 6 and _VR_RE.fullmatch(bytes(head[at + 4 : at + 6])))
        syntax = syntax or (IMPLICIT_LE if implicit else EXPLICIT_LE)
        self._syntax = syntax
        self._walker = _Walker(implicit, syntax != EXPLICIT_BE, self.out)
        if syntax == DEFLATED_LE:
            self._inflater = zlib.decompressobj(-15)
        rest = bytes(head[at:])
        self._head = bytearray()
        if rest:
            self._body(rest)

    def _body(self, data: bytes) -> None:
        assert self._walker is not None
        if self._inflater is None:
            self._walker.feed(data)
            return
        self._in += len(data)
        inflater = self._inflater
        while data:
            if self._deflated_end():
                self._after_deflated(len(data))
                return
            try:
                out = inflater.decompress(data, 1 << 16)
            except zlib.error:
                raise Unscannable("dicom: corrupt deflated data set") from None
            data = inflater.unconsumed_tail
            self._inflated += len(out)
            if self._inflated > INFLATE_GRACE + MAX_INFLATE_RATIO * self._in:
                raise Unscannable(f"dicom: expands more than {MAX_INFLATE_RATIO}:1")
            self._walker.feed(out)
            if self._deflated_end():
                # The bytes after the stream (zlib may report them in both).
                self._after_deflated(max(len(inflater.unused_data), len(data)))
                return

    def _deflated_end(self) -> bool:
        return self._inflater is not None and self._inflater.eof

    def _after_deflated(self, size: int) -> None:
        """``size`` bytes after the deflated stream: at most :data:`MAX_DEFLATE_TRAILER`
        in all (a padding byte; old tools such as DCTOOL write a gzip trailer)."""
        self._padding += size
        if self._padding > MAX_DEFLATE_TRAILER:
            raise Unscannable("dicom: data after the deflated data set")

    def _decode(self, walker: _Walker) -> Dataset:
        """pydicom's reading of the kept elements (whole and well-formed: walked)."""
        fp = io.BytesIO(bytes(walker.kept))
        try:
            return dicom_filereader.read_dataset(fp, walker.implicit, walker.little)
        except _VALUE_ERRORS:
            raise Unscannable("dicom: corrupt data set") from None

    def _report(self, ds: Dataset) -> None:
        member = self.out.member("dicom attributes", "text/plain")
        _Renderer(member).dataset(ds, 0)
        member.close()
        assert self._walker is not None
        if self._walker.private:
            private = self.out.member("dicom private attributes", "text/plain")
            for line in self._walker.private:
                private.write(line)
            private.close()
        removed = _text(ds, "PatientIdentityRemoved").strip().upper() == "YES"
        if identifies_patient(ds):
            self.out.finding("sensitive.health", patient_key(ds))
        for record in _patient_records(ds):
            if identifies_patient(record, removed):
                self.out.finding("sensitive.health", patient_key(record))


def _patient_records(ds: Dataset) -> Iterator[Dataset]:
    """The PATIENT records of a DICOMDIR (PS3.3 F.3.2.2.1)."""
    try:
        records = ds.get("DirectoryRecordSequence")
    except _VALUE_ERRORS:
        return
    for record in records or ():
        if _text(record, "DirectoryRecordType").strip().upper() == "PATIENT":
            yield record


# --------------------------------------------------------------------------- rendering

#: Value representations rendered as text (PS3.5 §6.2); UI (identifiers of
#: studies and series, dotted digits) and binary VRs are not.
_TEXT_VRS: Final = frozenset(
    ("AE", "AS", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UR", "UT")
)
_NUMBER_VRS: Final = frozenset(("DS", "IS"))
_DATE_RE: Final = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})")


class _Renderer:
    """Renders a data set's text attributes as ``name: value`` lines, bounded."""

    def __init__(self, out: TextOut) -> None:
        self._out = out
        self._chars = 0

    def dataset(self, ds: Dataset, depth: int) -> None:
        lines: list[str] = []
        for tag in list(ds.keys()):
            try:
                elem = ds[tag]
            except _VALUE_ERRORS:
                raw = ds.get_item(tag, keep_deferred=True)  # as read: no conversion
                value = getattr(raw, "value", None)
                if isinstance(value, bytes):
                    self._line(lines, depth, f"({tag.group:04X},{tag.element:04X})", value)
                continue
            name = elem.name if elem.keyword else f"({tag.group:04X},{tag.element:04X})"
            if elem.VR == "SQ":
                self._flush(lines)
                lines = []
                for item in elem.value or ():
                    self._write(f"{'> ' * depth}{name}:\n")
                    self.dataset(item, depth + 1)
            elif elem.VR in _TEXT_VRS or elem.VR == "UN":
                self._line(lines, depth, name, elem.value, elem.VR)
            elif elem.VR in _NUMBER_VRS:
                value = elem.value
                count = len(value) if isinstance(value, (list, dicom_multival.MultiValue)) else 1
                if count <= MAX_NUMBER_VALUES:
                    self._line(lines, depth, name, value, elem.VR)
        self._flush(lines)

    def _line(self, lines: list[str], depth: int, name: str, value: object, vr: str = "") -> None:
        text = _value_text(value, vr)
        if text:
            lines.append(f"{'> ' * depth}{name}: {text}\n")

    def _flush(self, lines: list[str]) -> None:
        if lines:
            self._write("".join(lines))

    def _write(self, text: str) -> None:
        self._chars += len(text)
        if self._chars > MAX_RENDERED_CHARS:
            raise Unscannable(f"dicom: more than {MAX_RENDERED_CHARS >> 20} MiB of text attributes")
        self._out.write(text)


def _value_text(value: object, vr: str) -> str:
    """One attribute value as text the detectors read (empty: nothing to show)."""
    if value is None:
        return ""
    if isinstance(value, (list, dicom_multival.MultiValue)):
        return "; ".join(t for t in (_value_text(v, vr) for v in value) if t)
    if isinstance(value, bytes):
        return _binary_text(value)
    if isinstance(value, dicom_valuerep.PersonName) or vr == "PN":
        return person_name(str(value))
    text = str(value)[:MAX_VALUE_CHARS].strip("\x00 ")
    if vr == "DA" and (date := _DATE_RE.fullmatch(text)):
        return "-".join(date.groups())
    return text


def person_name(value: str) -> str:
    """A PN value (``Family^Given^Middle^Prefix^Suffix``, up to three ``=``
    groups: alphabetic, ideographic, phonetic) as a name written with spaces."""
    groups = []
    for group in value[:MAX_VALUE_CHARS].split("="):
        words = " ".join(part.strip() for part in group.split("^") if part.strip())
        if words:
            groups.append(words)
    return " = ".join(groups)


def _binary_text(value: bytes) -> str:
    """A UN value shown when it is text (a private attribute read without its
    dictionary); binary values are not rendered."""
    value = value[:MAX_VALUE_CHARS].strip(b"\x00 ")
    if not value:
        return ""
    text = value.decode("utf-8", "replace")
    printable = sum(1 for c in text if c.isprintable() or c in "\r\n\t")
    return text if printable >= 0.9 * len(text) and "\ufffd" not in text else ""


# --------------------------------------------------------------------------- private values

#: VRs whose values the renderer shows (text, short numbers) or walks
#: (sequences); a private element of any other VR is examined as bytes.
_SHOWN_VRS: Final = _TEXT_VRS | _NUMBER_VRS | {"SQ"}


def _repeating(tag: int) -> bool:
    """Whether ``tag`` is a public tag of a repeating group (overlays 60xx, curves 50xx)."""
    try:
        dicom_datadict.get_entry(tag)
    except KeyError:
        return False
    return True


def _tag_name(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


# --------------------------------------------------------------------------- registry


#: First elements of a bare data set in implicit VR: (0008,0005) Specific
#: Character Set, (0008,0008) Image Type, (0008,0012) and (0008,0013)
#: Instance Creation Date/Time, (0008,0016) SOP Class UID.
_BARE_FIRST: Final = frozenset((0x0005, 0x0008, 0x0012, 0x0013, 0x0016))
#: A short text value; a UID (SOP Class UID, often first) of odd length ends
#: in one NUL pad byte (PS3.5 §9.1), other text VRs pad with a space.
_ASCII_VALUE: Final = re.compile(rb"[\x20-\x7e]*\x00?")


def sniff_dicom(prefix: bytes) -> bool:
    """``DICM`` after the preamble, or a bare file meta group / data set: its first
    element explicit VR in group 0002 or 0008, or implicit VR in group 0008 with
    a short text value (or that group's 4-byte length, then its next element)."""
    if prefix[128:132] == b"DICM":
        return True
    if len(prefix) < 8 or prefix[:2] not in (b"\x02\x00", b"\x08\x00") or prefix[3] != 0:
        return False
    if bytes(prefix[4:6]) in (b"UL", b"OB", b"UI", b"CS", b"SH", b"DA", b"TM"):
        return True
    if prefix[:8] == b"\x08\x00\x00\x00\x04\x00\x00\x00":
        # (0008,0000) Group Length, as older implicit VR files start.
        return _bare_implicit(prefix[12:])
    return _bare_implicit(prefix)


def _bare_implicit(prefix: bytes) -> bool:
    """An implicit VR element of group 0008 that data sets start with, with a short
    text value."""
    if len(prefix) < 8:
        return False
    length = int.from_bytes(prefix[4:8], "little")
    return (
        prefix[:2] == b"\x08\x00"
        and prefix[3] == 0
        and prefix[2] in _BARE_FIRST
        and 0 < length <= 64
        and _ASCII_VALUE.fullmatch(prefix[8 : 8 + length]) is not None
        and len(prefix) >= 8 + length
    )


#: Above TIFF and the other image readers: a DICOM preamble may hold a TIFF
#: header (dual-personality files), and the DICOM reading is the one that sees
#: the patient.
DICOM_PRIORITY: Final = 30

DICOM: Final = register(
    Format("dicom", "application/dicom", sniff_dicom, stream=DicomReader, priority=DICOM_PRIORITY)
)
