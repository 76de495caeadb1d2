"""DICOM reader (gateway/classify/formats/medical.py): instances made by pydicom.

Patient-identifying attributes rendered as text (planted Resident IDs, HKIDs
and phones found by the real matcher), one ``sensitive.health`` finding per
identifying instance keyed by its patient (distinct patients counted once),
de-identified instances counting nothing, pixel data never kept, every
transfer syntax, corrupt and hostile variants unscannable, and a hypothesis
test that mutates valid files and accepts only success or ``Unscannable``.

Private values (vendor blocks: a Siemens CSA header, a fixed-width UN record,
UTF-16LE text, at any depth) are examined for text: planted identifiers found,
clean vendor headers clean and scannable, oversized ones unscannable.
"""

from __future__ import annotations

import contextlib
import io
import pathlib
import random
import struct
import zipfile
from collections.abc import Callable
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
from gateway.classify.formats import identify, medical
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
from gateway.classify.testing import cn_mobile, resident_id

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
    setup: Callable[[Dataset], None] | None = None,
    **attributes: Any,
) -> bytes:
    """One DICOM instance (Part 10 file) written by pydicom (``setup`` adds what
    keywords cannot: private blocks)."""
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
    if setup is not None:
        setup(ds)
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


@pytest.mark.parametrize("group_length", [False, True])
def test_bare_implicit_data_set_starting_with_its_sop_class(group_length: bool) -> None:
    """An implicit VR data set written without preamble or meta group, as PACS
    exports and toolkits write it: its first element is often the SOP Class UID,
    whose odd-length value ends in a NUL pad byte (older ones first give the
    group's length)."""
    ds = Dataset()
    ds.SOPClassUID = CT  # 25 characters: padded to 26 with a NUL
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "CT"
    for key, value in patient(1).items():
        setattr(ds, key, value)
    out = io.BytesIO()
    ds.save_as(out, implicit_vr=True, little_endian=True)
    data = out.getvalue()
    assert data[:4] == b"\x08\x00\x16\x00"
    assert data[8 + len(CT)] == 0
    if group_length:
        group = data[: data.index(b"\x10\x00")]  # group 0008 ends where 0010 begins
        data = struct.pack("<HHII", 0x0008, 0x0000, 4, len(group)) + data
    assert identify(data) is medical.DICOM
    read = read_stream(DicomReader, data)
    assert read.finding_counts() == {"sensitive.health": 1}
    summary = scan(data)
    assert summary.content.type == "application/dicom"
    assert counts(summary)["sensitive.health"] == 1
    assert not summary.unscannable


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


def test_hostile_values_do_not_escape_as_pydicom_errors() -> None:
    """Found by mutating files: a number whose length is not a multiple of its
    size (pydicom's own BytesLengthException) and an empty value of a VR
    pydicom does not know (NotImplementedError, raised again when the renderer
    fetched the raw element) are read around, not crashes."""
    body = _element((8, 5), b"CS", b"ISO_IR 192")
    body += _element((0x10, 0x10), b"PN", b"Chan^Tai Man")
    body += _element((0x10, 0x20), b"LH", b"")
    body += _element((0x28, 0x10), b"US", b"abc")
    out = read_stream(DicomReader, _file(body))
    assert "Patient's Name: Chan Tai Man\n" in out.text
    assert out.finding_counts() == {"sensitive.health": 1}


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


# --------------------------------------------------------------------------- private values

PRIVATE_RNG = random.Random(29)
#: Identifiers planted in private values: a Resident ID and a Mainland mobile.
PLANTED_ID, PLANTED_MOBILE = resident_id(PRIVATE_RNG), cn_mobile(PRIVATE_RNG)
#: What a de-identified instance keeps of its patient: nothing.
DE_IDENTIFIED = {"PatientName": "", "PatientID": "", "PatientIdentityRemoved": "YES"}


def csa_header(fields: dict[str, tuple[str, list[str]]]) -> bytes:
    """A Siemens CSA2 header (``SV10``), as syngo writes into (0029,xx10) and
    (0029,xx20): per field its name (64 bytes), VM, VR, syngo data type, item
    count and 77, then six items or more, each four int32 (the length second)
    and the NUL-terminated value padded to four bytes."""
    out = bytearray(b"SV10\x04\x03\x02\x01" + struct.pack("<2I", len(fields), 77))
    for name, (vr, values) in fields.items():
        count = max(6, len(values))
        out += name.encode().ljust(64, b"\0")
        out += struct.pack("<i4s3i", len(values), vr.encode().ljust(4, b"\0"), 3, count, 77)
        for n in range(count):
            value = values[n].encode() + b"\0" if n < len(values) else b""
            out += struct.pack("<4i", len(value), len(value), 77, len(value))
            out += value.ljust(-(-len(value) // 4) * 4, b"\0")
    return bytes(out)


#: An MR image's CSA Image Header Info fields (names and values as syngo MR
#: VE11 writes them): numbers, dimensions, coil names, times.
CSA_IMAGE: dict[str, tuple[str, list[str]]] = {
    "EchoLinePosition": ("IS", ["160"]),
    "EchoColumnPosition": ("IS", ["160"]),
    "EchoPartitionPosition": ("IS", ["32"]),
    "UsedChannelMask": ("UL", ["4294967295"]),
    "ICE_Dims": ("LO", ["X_1_1_1_1_1_1_1_1_1_1_1_41"]),
    "SliceMeasurementDuration": ("DS", ["286000.00000000"]),
    "GradientMode": ("SH", ["Fast"]),
    "ImaCoilString": ("LO", ["HEA;HEP"]),
    "ImaAbsTablePosition": ("SL", ["0", "0", "-1305"]),
    "SliceNormalVector": ("FD", ["0.00000000", "0.00000000", "1.00000000"]),
    "ImaPATModeText": ("LO", ["p2"]),
    "B_value": ("IS", ["0"]),
    "RealDwellTime": ("IS", ["2600"]),
    "TimeAfterStart": ("DS", ["12.34500000"]),
    "MosaicRefAcqTimes": ("FD", [f"{t * 62.5:.8f}" for t in range(32)]),
    "SequenceMask": ("UL", ["134217728"]),
    "AcquisitionMatrixText": ("SH", ["320p*320"]),
    "ImageHistory": ("LO", ["ChannelMixing:ND=true_CMM=1_CDM=1", "ACC1"]),
    "ProtocolSliceNumber": ("IS", ["17"]),
    "RFSWDDataType": ("SH", ["predicted"]),
}
#: The CSA Series Header Info's MrPhoenixProtocol: the protocol as ASCCONV text.
PHOENIX = "\n".join(
    [
        "### ASCCONV BEGIN object=MrProtDataImpl@MrProtocolData version=51130001 ###",
        "ulVersion\t = \t51130001",
        'tSequenceFileName\t = \t"%SiemensSeq%\\tse"',
        'tProtocolName\t = \t"t2_tse_tra_p2"',
        'sProtConsistencyInfo.tBaselineString\t = \t"N4_VE11C_LATEST_20160120"',
        "sRXSPEC.lGain\t = \t1",
        "sTXSPEC.asNucleusInfo[0].lFrequency\t = \t123251815",
        "sKSpace.lBaseResolution\t = \t320",
        "alTR[0]\t = \t4000000",
        "lTotalScanTimeSec\t = \t222",
        *(
            f"sSliceArray.asSlice[{i}].sPosition.dTra\t = \t{-56.3 + 5 * i:.9f}\n"
            f"sSliceArray.asSlice[{i}].dThickness\t = \t5"
            for i in range(40)
        ),
        "### ASCCONV END ###",
    ]
)
CSA_SERIES: dict[str, tuple[str, list[str]]] = {
    "UsedPatientWeight": ("IS", ["70"]),
    "NumberOfPrescans": ("IS", ["0"]),
    "MrPhoenixProtocol": ("UN", [PHOENIX]),
    "CoilForGradient": ("SH", ["AS092"]),
}
#: The same image header, with a comment field holding the patient's Resident
#: ID and mobile (what an operator types, what a vendor copies).
CSA_IMAGE_WITH_IDS = {
    **CSA_IMAGE,
    "ImaComments": ("LT", [f"pt id {PLANTED_ID} call {PLANTED_MOBILE}"]),
}


def private_blocks(
    image: dict[str, tuple[str, list[str]]] = CSA_IMAGE,
) -> Callable[[Dataset], None]:
    """``setup`` adding a Siemens CSA Image and Series Header (OB) and a GE-like
    fixed-width record (UN) of numbers."""

    def setup(ds: Dataset) -> None:
        csa = ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True)
        csa.add_new(0x08, "CS", "IMAGE NUM 4")
        csa.add_new(0x10, "OB", csa_header(image))
        csa.add_new(0x20, "OB", csa_header(CSA_SERIES))
        ge = ds.private_block(0x0043, "GEMS_PARM_01", create=True)
        ge.add_new(0x28, "UN", struct.pack("<4I", 1, 512, 512, 0) + b"CT01\0HiSpeed\0" * 3)
        ge.add_new(0x2A, "OB", bytes(range(256)) * 4)

    return setup


def _with_private(syntax: str, tag: int, vr: str, value: bytes, **attributes: Any) -> bytes:
    """A de-identified instance with one private value ``tag`` (its creator first)."""

    def setup(ds: Dataset) -> None:
        block = ds.private_block(tag >> 16, "ACME 1.0", create=True)
        block.add_new(tag & 0xFF, vr, value)

    return instance(syntax, setup=setup, **{**DE_IDENTIFIED, **attributes})


def _private_text(data: bytes, chunk: int = 0) -> str:
    out = read_stream(DicomReader, data, chunk)
    return "".join(m.text for m in out.members if m.name == "dicom private attributes")


@pytest.mark.parametrize("syntax", SYNTAXES)
def test_identifiers_in_a_csa_header_are_found(syntax: str) -> None:
    """A de-identified instance (public attributes empty) whose CSA header holds
    a Resident ID and a mobile: found, as in a public attribute."""
    data = instance(syntax, setup=private_blocks(CSA_IMAGE_WITH_IDS), **DE_IDENTIFIED)
    summary = scan(data, chunk=1000)
    found = counts(summary)
    assert found.get("pii.cn_resident_id") == 1
    assert found.get("pii.cn_phone") == 1
    # The patient rule reads the standard's attributes: the private text
    # counts as the detectors' findings, not as an identified patient.
    assert "sensitive.health" not in found
    assert summary.unscannable == ()
    text = _private_text(data)
    assert "\n(0029,1010): SV10 EchoLinePosition " in "\n" + text
    assert f"ImaComments pt id {PLANTED_ID} call {PLANTED_MOBILE}" in text
    for chunk in (7, 1000):
        assert _private_text(data, chunk) == text


@pytest.mark.parametrize("syntax", SYNTAXES)
def test_clean_vendor_headers_scan_clean(syntax: str) -> None:
    """CSA image and series headers and GE blocks without identifiers: read (the
    protocol is in the text), nothing found, not unscannable."""
    data = instance(syntax, setup=private_blocks(), **DE_IDENTIFIED)
    summary = scan(data, chunk=4096)
    assert summary.labels == {}
    assert summary.unscannable == ()
    text = _private_text(data)
    assert "MrPhoenixProtocol" in text
    assert 'sProtConsistencyInfo.tBaselineString  =  "N4_VE11C_LATEST_20160120"' in text
    assert "(0043,1028): CT01 HiSpeed CT01 HiSpeed CT01 HiSpeed" in text


def test_a_siemens_sample_with_private_binary_scans_clean() -> None:
    """pydicom's examples_overlay.dcm: a Siemens MR with a MedCom OOG block (OB)."""
    data = pathlib.Path(get_testdata_file("examples_overlay.dcm")).read_bytes()  # type: ignore[arg-type]
    assert "(0029,1110): STEP; HEADER;" in _private_text(data)
    summary = scan(data)
    assert counts(summary) == {"sensitive.health": 1}  # its patient's name and ID
    assert summary.unscannable == ()


@pytest.mark.parametrize("syntax", SYNTAXES)
def test_an_un_record_of_padded_text_is_found(syntax: str) -> None:
    """A vendor record of NUL-padded fixed-width text fields (UN; in implicit VR
    what any private value without a dictionary reads as): not text as a
    whole, its fields are."""
    record = b"".join(
        field.encode().ljust(width, b"\0")
        for field, width in (("Chan^Tai Man", 64), (PLANTED_ID, 32), (PLANTED_MOBILE, 16))
    )
    data = _with_private(syntax, 0x00091010, "UN", struct.pack("<2I", 3, 112) + record)
    found = counts(scan(data))
    assert found.get("pii.cn_resident_id") == 1
    assert found.get("pii.cn_phone") == 1
    assert f"(0009,1010): Chan^Tai Man {PLANTED_ID} {PLANTED_MOBILE}" in _private_text(data)


@pytest.mark.parametrize("syntax", SYNTAXES)
@pytest.mark.parametrize("at", [0, 1])
def test_utf16le_text_is_found(syntax: str, at: int) -> None:
    """UTF-16LE text (Windows modality software) at either alignment, with the
    Chinese hotword an 8-digit Hong Kong phone needs."""
    text = f"病人 Chan Tai Man ID {PLANTED_ID} 电话：9123 4567"
    value = b"\x07" * at + text.encode("utf-16-le") + b"\0\0"
    value += b"\0" * (len(value) % 2)
    data = _with_private(syntax, 0x00191010, "OB", value)
    found = counts(scan(data))
    assert found.get("pii.cn_resident_id") == 1
    assert found.get("pii.hk_phone") == 1
    line = _private_text(data)
    assert line.startswith("(0019,1010): ")
    assert f" {text}\n" in line


@pytest.mark.parametrize("syntax", SYNTAXES)
def test_private_values_in_sequences_are_found(syntax: str) -> None:
    """A CSA header in a Referenced Image Sequence item, and a private OB two
    private sequences deep."""

    def setup(ds: Dataset) -> None:
        item = Dataset()
        item.ReferencedSOPClassUID = CT
        item.ReferencedSOPInstanceUID = generate_uid()
        block = item.private_block(0x0029, "SIEMENS CSA HEADER", create=True)
        block.add_new(0x10, "OB", csa_header(CSA_IMAGE_WITH_IDS))
        ds.ReferencedImageSequence = Sequence([item])
        inner = Dataset()
        inner.private_block(0x0011, "ACME 1.0", create=True).add_new(
            0x20, "OB", b"\x01\x02" + f"tel {cn_mobile(random.Random(3))}".encode() + b"\0"
        )
        outer = Dataset()
        outer.private_block(0x0011, "ACME 1.0", create=True).add_new(0x10, "SQ", Sequence([inner]))
        ds.private_block(0x0011, "ACME 1.0", create=True).add_new(0x10, "SQ", Sequence([outer]))

    data = instance(syntax, setup=setup, **DE_IDENTIFIED)
    found = counts(scan(data))
    assert found.get("pii.cn_resident_id") == 1
    assert found.get("pii.cn_phone") == 2
    text = _private_text(data)
    assert "(0008,1140) > (0029,1010): SV10 " in text
    if syntax != ImplicitVRLittleEndian:  # without a dictionary, a private SQ is one UN value
        assert "(0011,1010) > (0011,1010) > (0011,1020): tel 1" in text


def test_public_binary_values_are_not_examined() -> None:
    """Overlay Data (a known public tag, bulk samples) is not read: the limit of
    the exclusion, as for pixel data."""

    def setup(ds: Dataset) -> None:
        for element, vr, value in (
            (0x0010, "US", 8),
            (0x0011, "US", 8),
            (0x0040, "CS", "G"),
            (0x0050, "SS", [1, 1]),
            (0x0100, "US", 1),
            (0x0102, "US", 0),
            (0x3000, "OW", f"tel {PLANTED_MOBILE}".encode().ljust(16, b"\0")),
        ):
            ds.add_new(0x60000000 | element, vr, value)

    data = instance(setup=setup, **DE_IDENTIFIED)
    assert _private_text(data) == ""
    assert "pii.cn_phone" not in counts(scan(data))


def test_oversized_private_values_are_unscannable() -> None:
    limit = medical.MAX_PRIVATE_VALUE
    reason = f"dicom: private attribute over {limit >> 20} MiB"
    whole = _with_private(ExplicitVRLittleEndian, 0x00291010, "OB", b"\0" * (limit + 2))
    with pytest.raises(Unscannable) as caught:
        read_stream(DicomReader, whole, 1 << 16)
    assert caught.value.reason == reason
    # Undefined length: fragments past the bound.
    fragment = struct.pack("<HHI", 0xFFFE, 0xE000, limit // 2) + b"\0" * (limit // 2)
    fragments = struct.pack("<HH2sHI", 0x0029, 0x1010, b"OB", 0, 0xFFFFFFFF) + fragment * 3
    fragments += struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    with pytest.raises(Unscannable) as caught:
        read_stream(DicomReader, _file(fragments))
    assert caught.value.reason == reason
    # At the bound: examined.
    at_limit = _with_private(ExplicitVRLittleEndian, 0x00291010, "OB", b"\0" * limit)
    assert read_stream(DicomReader, at_limit).findings == []


def test_private_values_are_bounded_per_instance() -> None:
    limit, each = medical.MAX_PRIVATE_BYTES, medical.MAX_PRIVATE_VALUE
    body = b"".join(
        _element((0x0029, 0x1010 + n), b"OB", b"\0" * each) for n in range(limit // each + 1)
    )
    with pytest.raises(Unscannable) as caught:
        read_stream(DicomReader, _file(body), 1 << 20)
    assert caught.value.reason == f"dicom: private attributes over {limit >> 20} MiB"


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


_ORIGINALS = [instance(syntax, **patient(0)) for syntax in SYNTAXES] + [
    instance(syntax, setup=private_blocks(CSA_IMAGE_WITH_IDS), **DE_IDENTIFIED)
    for syntax in SYNTAXES
]


@given(data=st.data())
def test_mutations_never_crash(data: st.DataObject) -> None:
    original = data.draw(st.sampled_from(_ORIGINALS))
    mutated = mutate(original, data)
    with contextlib.suppress(Unscannable):
        read_stream(DicomReader, mutated, data.draw(st.sampled_from([0, 37])))
