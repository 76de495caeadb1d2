"""DICOM reader (gateway/classify/formats/medical.py): instances made by pydicom.

Patient-identifying attributes rendered as text (planted Resident IDs, HKIDs
and phones found by the real matcher), one ``sensitive.health`` finding per
identifying instance keyed by its patient (distinct patients counted once),
de-identified instances counting nothing, pixel data never kept, every
transfer syntax, corrupt and hostile variants unscannable, and a hypothesis
test that mutates valid files and accepts only success or ``Unscannable``.
"""

from __future__ import annotations

import contextlib
import io
import pathlib
import random
import struct
import zipfile
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    generate_uid,
)

from gateway.bench.classify import _person
from gateway.classify import DetectorSet
from gateway.classify.formats import identify
from gateway.classify.formats.base import Unscannable
from gateway.classify.formats.medical import (
    MAX_KEPT_BYTES,
    MAX_NESTING,
    DicomReader,
    identifies_patient,
    is_dummy,
    person_name,
)
from gateway.classify.formats.testing import RecordingExtract, label_counts, read_stream, scan_bytes
from gateway.classify.summary import ScanSummary

# pytest re-applies its own warning filters per test; in the gateway, medical.py
# silences pydicom's warnings about hostile values (they quote the values).
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:pydicom")

DETECTORS = DetectorSet.build()
RNG = random.Random(17)
PEOPLE = [_person(RNG, n) for n in range(3)]
CT = "1.2.840.10008.5.1.4.1.1.2"


def instance(
    syntax: str = ExplicitVRLittleEndian,
    pixels: bytes = b"\0" * 16,
    sop_class: str = CT,
    **attributes: Any,
) -> bytes:
    """One DICOM instance (Part 10 file) written by pydicom."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = UID(syntax)
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.StudyDescription = "CT chest"
    for key, value in attributes.items():
        setattr(ds, key, value)
    if pixels:
        ds.Rows, ds.Columns = len(pixels) // 1024 or 1, min(1024, len(pixels))
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.SamplesPerPixel, ds.PixelRepresentation = 1, 0
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.PixelData = pixels
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def patient(n: int, **extra: Any) -> dict[str, Any]:
    """The identifying attributes of person ``n`` (Resident ID as Patient ID, phones, HKID)."""
    resident_id, mobile, _email, hkid = PEOPLE[n][:4]
    other = Dataset()
    other.PatientID = hkid
    other.IssuerOfPatientID = "HKID"
    return {
        "PatientName": f"Chan^Tai Man{n}=陳^大文",
        "PatientID": resident_id,
        "IssuerOfPatientID": "CN-RID",
        "PatientBirthDate": "19800101",
        "PatientTelephoneNumbers": mobile,
        "PatientAddress": "1 Shennan Road, Futian, Shenzhen",
        "OtherPatientIDsSequence": Sequence([other]),
        "InstitutionName": "Futian Hospital",
        "ReferringPhysicianName": "Lee^Ka Ho",
        "AccessionNumber": f"ACC{n:05d}",
        **extra,
    }


def scan(data: bytes, chunk: int = 0) -> ScanSummary:
    """Through the whole decoder, in ``chunk``-byte pieces (whole when 0)."""
    return scan_bytes(DETECTORS, data, chunk)


counts = label_counts


SYNTAXES = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    ExplicitVRBigEndian,
    DeflatedExplicitVRLittleEndian,
]


@pytest.mark.parametrize("syntax", SYNTAXES)
def test_identifying_attributes_rendered_and_patient_counted(syntax: str) -> None:
    data = instance(syntax, **patient(0))
    out = read_stream(DicomReader, data)
    resident_id, mobile, _email, hkid = PEOPLE[0][:4]
    text = out.text
    assert f"Patient ID: {resident_id}\n" in text
    assert "Patient's Name: Chan Tai Man0 = 陳 大文\n" in text  # caret form with spaces
    assert "Patient's Birth Date: 1980-01-01\n" in text  # ISO date
    assert f"Patient's Telephone Numbers: {mobile}\n" in text
    assert f"> Patient ID: {hkid}\n" in text  # inside Other Patient IDs Sequence
    assert "Institution Name: Futian Hospital\n" in text
    assert "Referring Physician's Name: Lee Ka Ho\n" in text
    assert out.finding_counts() == {"sensitive.health": 1}
    assert [m.name for m in out.members] == ["dicom attributes"]
    for chunk in (1, 7, 1000):
        chunked = read_stream(DicomReader, data, chunk)
        assert (chunked.text, chunked.findings) == (text, out.findings)


def test_identifiers_found_through_the_decoder() -> None:
    summary = scan(instance(**patient(1)), chunk=100)
    assert summary.content.type == "application/dicom"
    found = counts(summary)
    assert found["sensitive.health"] == 1
    assert found["pii.cn_resident_id"] == 1
    assert found["pii.cn_phone"] == 1
    assert found["pii.hk_id"] == 1
    assert summary.unscannable == ()


def test_a_series_in_a_zip_counts_each_instance_and_each_patient_once() -> None:
    members = [instance(**patient(0)) for _ in range(3)] + [instance(**patient(1))] * 2
    members.append(instance(PatientName="ANONYMOUS", PatientID="", PatientIdentityRemoved="YES"))
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        for i, data in enumerate(members):
            z.writestr(f"series/IM{i:04d}.dcm", data)
    summary = scan(archive.getvalue())
    health = summary.labels["sensitive.health"]
    assert (health.count, health.distinct) == (5, 2)


@pytest.mark.parametrize(
    "attributes",
    [
        {"PatientName": "ANONYMOUS", "PatientID": "", "PatientIdentityRemoved": "YES"},
        # the profile keeps pseudonyms: the flag says they identify no one
        {"PatientName": "Subject^001", "PatientID": "SUBJ-001", "PatientIdentityRemoved": "YES"},
        # no flag, but every identifying attribute empty or a placeholder
        {"PatientName": "", "PatientID": "XXXXXXXX", "PatientBirthDate": ""},
        {},
    ],
)
def test_de_identified_instances_count_nothing(attributes: dict[str, Any]) -> None:
    out = read_stream(DicomReader, instance(**attributes))
    assert out.findings == []
    summary = scan(instance(**attributes))
    assert "sensitive.health" not in summary.labels
    assert not any(label.startswith("pii.") for label in summary.labels)


def test_identification_rule() -> None:
    ds = Dataset()
    assert not identifies_patient(ds)
    ds.PatientBirthDate = "19900101"
    assert identifies_patient(ds)  # a birth date alone is not removed
    ds.PatientIdentityRemoved = "YES"
    assert not identifies_patient(ds)
    only_other = Dataset()
    item = Dataset()
    item.PatientID = PEOPLE[0][3]
    only_other.OtherPatientIDsSequence = Sequence([item])
    assert identifies_patient(only_other)
    item.PatientID = "ANONYMOUS"
    assert not identifies_patient(only_other)
    assert all(is_dummy(v) for v in ("^^", "anonymous", "00000000", "19000101"))
    assert not is_dummy("Chan^Tai Man")
    assert person_name("Chan^Tai Man^^Dr=陳^大文") == "Chan Tai Man Dr = 陳 大文"


def test_dicomdir_counts_its_patient_records() -> None:
    records = []
    for n, kind in ((0, "PATIENT"), (None, "STUDY"), (1, "PATIENT"), (2, "PATIENT")):
        record = Dataset()
        record.DirectoryRecordType = kind
        if n is not None:
            record.PatientID = PEOPLE[n][0] if n < 2 else "ANON"
            record.PatientName = f"Patient^{n}" if n < 2 else ""
        records.append(record)
    data = instance(
        pixels=b"",
        sop_class="1.2.840.10008.1.3.10",
        FileSetID="STUDY1",
        DirectoryRecordSequence=Sequence(records),
    )
    out = read_stream(DicomReader, data)
    assert out.finding_counts() == {"sensitive.health": 2}
    assert f"> Patient ID: {PEOPLE[1][0]}\n" in out.text


def test_pixel_data_is_never_kept_nor_read() -> None:
    """Pixels stream past unkept: digits in them are not seen (documented limit)."""
    mobile = PEOPLE[2][1]
    pixels = (f"tel {mobile} ".encode() * 400_000)[: 4 << 20]
    data = instance(pixels=pixels, PatientName="", PatientID="")
    out = RecordingExtract()
    reader = DicomReader(out)
    for i in range(0, len(data), 65536):
        reader.feed(data[i : i + 65536])
    assert reader._walker is not None
    assert len(reader._walker.kept) < 4096
    reader.finish()
    assert mobile not in out.text
    assert out.findings == []


def test_encapsulated_pixels_and_encapsulated_document() -> None:
    from pydicom.encaps import encapsulate

    frames = encapsulate([b"\xff\xd8\xff\xd9" * 1000, b"\xff\xd8\xff\xd9"])
    jpeg = instance(JPEGBaseline8Bit, pixels=b"", **patient(2))
    jpeg_out = read_stream(DicomReader, _with_pixels(jpeg, frames))
    assert jpeg_out.finding_counts() == {"sensitive.health": 1}
    pdf = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"
    report = instance(
        pixels=b"",
        sop_class="1.2.840.10008.5.1.4.1.1.104.1",
        MIMETypeOfEncapsulatedDocument="application/pdf",
        EncapsulatedDocument=pdf,
        **patient(2),
    )
    out = read_stream(DicomReader, report, 50)
    [nested] = out.nested_members
    assert (nested.name, bytes(nested.data), nested.closed) == ("encapsulated document", pdf, True)
    assert out.finding_counts() == {"sensitive.health": 1}


def _with_pixels(data: bytes, fragments: bytes) -> bytes:
    """``data`` with encapsulated Pixel Data (undefined length) appended."""
    header = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFFF)
    return data + header + fragments + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)


def test_bare_data_set_without_preamble() -> None:
    full = instance(**patient(0))
    ds_start = full.index(b"\x08\x00\x05\x00")  # (0008,0005), the data set's first element
    bare = full[ds_start:]
    assert identify(bare) is not None
    out = read_stream(DicomReader, bare)
    assert out.finding_counts() == {"sensitive.health": 1}
    no_preamble = full[128 + 4 :]  # the meta group first, no preamble
    assert read_stream(DicomReader, no_preamble).findings == out.findings


def _element(tag: tuple[int, int], vr: bytes, value: bytes) -> bytes:
    if vr in (b"SQ", b"OB", b"UN", b"UT"):
        return struct.pack("<HH2sHI", *tag, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", *tag, vr, len(value)) + value


def _file(body: bytes) -> bytes:
    syntax = ExplicitVRLittleEndian.encode() + b"\0"
    meta = _element((2, 0x10), b"UI", syntax)
    return b"\0" * 128 + b"DICM" + meta + body


def _nested(depth: int) -> bytes:
    inner = b""
    for _ in range(depth):
        item = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF) + inner
        item += struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
        inner = struct.pack("<HH2sHI", 0x0008, 0x1115, b"SQ", 0, 0xFFFFFFFF) + item
        inner += struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    return inner


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (instance(**patient(0))[:-3], "dicom: truncated data set"),
        (instance(**patient(0))[:140], "dicom: truncated file meta group"),
        (_file(_element((0x10, 0x10), b"PN", b"A^B")[:-1]), "dicom: truncated data set"),
        (
            _file(_element((8, 5), b"CS", b"ISO_IR 192") + struct.pack("<HH2sH", 16, 16, b"p!", 2)),
            "dicom: invalid value representation",
        ),
        (_file(struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)), "dicom: misplaced item or delimiter"),
        (_file(struct.pack("<HH2sH", 0x10, 0x10, b"PN", 0xFFFF)), "dicom: truncated data set"),
        (
            _file(struct.pack("<HH2sHI", 0x10, 0x10, b"UT", 0, 0xFFFFFFFF)),
            "dicom: undefined length on a non-sequence",
        ),
        (
            _file(_element((8, 0x1115), b"SQ", struct.pack("<HHI", 0xFFFE, 0xE000, 100))),
            "dicom: element overruns its sequence",
        ),
        (_file(_nested(MAX_NESTING)), f"dicom: sequences nested deeper than {MAX_NESTING}"),
        (
            _file(_element((0x10, 0x4000), b"UT", b"x" * (MAX_KEPT_BYTES + 2))),
            f"dicom: data elements over {MAX_KEPT_BYTES >> 20} MiB",
        ),
    ],
)
def test_bad_dicom_is_unscannable(data: bytes, reason: str) -> None:
    with pytest.raises(Unscannable) as caught:
        read_stream(DicomReader, data)
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    ("name", "findings"),
    [
        ("CT_small.dcm", 1),
        ("MR_small_implicit.dcm", 1),
        ("MR_small_bigendian.dcm", 1),
        ("image_dfl.dcm", 0),  # deflated, with an old tool's gzip trailer
        ("SC_rgb_jpeg.dcm", 0),  # declares JPEG but is implicit VR, as pydicom tolerates
        ("rtstruct.dcm", 1),  # a bare implicit-VR data set: no preamble, no meta group
        ("JPEG2000.dcm", 1),
        ("waveform_ecg.dcm", 1),
        ("test-SR.dcm", 1),
        ("UN_sequence.dcm", 0),
    ],
)
def test_pydicom_sample_files(name: str, findings: int) -> None:
    """Files of other writers (GDCM, DCMTK, dclunie's tools) shipped with pydicom."""
    data = pathlib.Path(get_testdata_file(name)).read_bytes()  # type: ignore[arg-type]
    fmt = identify(data[:65536])
    assert fmt is not None
    assert fmt.name == "dicom"
    out = read_stream(DicomReader, data, 4096)
    assert len(out.findings) == findings


@pytest.mark.parametrize("name", ["MR_truncated.dcm", "rtplan_truncated.dcm"])
def test_truncated_sample_files_are_unscannable(name: str) -> None:
    data = pathlib.Path(get_testdata_file(name)).read_bytes()  # type: ignore[arg-type]
    with pytest.raises(Unscannable, match="dicom: truncated data set"):
        read_stream(DicomReader, data)


def test_sniffer() -> None:
    fmt = identify(instance()[:65536])
    assert fmt is not None
    assert (fmt.name, fmt.media_type) == ("dicom", "application/dicom")
    tiff_preamble = b"II*\x00" + b"\0" * 124 + b"DICM" + instance()[132:]
    fmt = identify(tiff_preamble)
    assert fmt is not None
    assert fmt.name == "dicom"  # a dual-personality file is read as DICOM


#: Words a hostile copy plants: lengths of 0 and 2^32-1, a VR, an item tag.
_WORDS = [b"\xff" * 4, b"\0" * 4, b"SQ\0\0", b"\xfe\xff\x00\xe0"]


#: Words a hostile copy plants: lengths of 0 and 2^32-1, a VR, an item tag.
_WORDS = [b"\xff" * 4, b"\0" * 4, b"SQ\0\0", b"\xfe\xff\x00\xe0"]


def mutate(original: bytes, data: st.DataObject) -> bytes:
    """Flip, overwrite, cut or insert bytes: what a corrupt or hostile copy looks like."""
    mutated = bytearray(original)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(132, max(132, len(mutated) - 1)))
        action = data.draw(st.sampled_from(["flip", "word", "cut", "insert"]))
        if action == "flip" and at < len(mutated):
            mutated[at] = data.draw(st.integers(0, 255))
        elif action == "word":
            mutated[at : at + 4] = data.draw(st.sampled_from(_WORDS))
        elif action == "cut":
            del mutated[at:]
        else:
            mutated[at:at] = data.draw(st.binary(min_size=1, max_size=16))
    return bytes(mutated)


_ORIGINALS = [instance(syntax, **patient(0)) for syntax in SYNTAXES]


@given(data=st.data())
def test_mutations_never_crash(data: st.DataObject) -> None:
    original = data.draw(st.sampled_from(_ORIGINALS))
    mutated = mutate(original, data)
    with contextlib.suppress(Unscannable):
        read_stream(DicomReader, mutated, data.draw(st.sampled_from([0, 37])))
