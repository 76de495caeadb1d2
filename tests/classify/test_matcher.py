"""Per-label detection through TextMatcher: true positives, near-misses, tricky formats.

Every case is scanned whole and byte by byte; both must agree (chunk invariance).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import random

import pytest

from gateway.classify import labels as L
from gateway.classify import validators as V
from gateway.classify.detectors import CustomDetector, DetectorSet
from gateway.classify.matcher import KeyedHasher, MatchResult, TextMatcher
from tests.classify.test_genetic_precision import token_rule

# Every expectation holds for the compiled core and the Python reference.
pytestmark = pytest.mark.usefixtures("matcher_core")

SECRET = b"s" * 32
TODAY = dt.date(2026, 11, 25)
BUILTIN = DetectorSet.build()

RID = "11010519491231002X"
HKID = "A123456(3)"
CARD = "4111111111111111"
USCC = "91350100M000100Y43"


def _run(
    detectors: DetectorSet, members: list[tuple[str, bytes]], chunk: int | None, **kw: object
) -> MatchResult:
    m = TextMatcher(detectors, SECRET, today=TODAY, **kw)  # type: ignore[arg-type]
    for content_type, data in members:
        m.begin_member(content_type)
        if chunk is None:
            m.text(data)
        else:
            for i in range(0, len(data), chunk):
                m.text(data[i : i + chunk])
        m.end_member()
    return m.result()


def scan(
    text: str | bytes,
    content_type: str = "text/plain",
    detectors: DetectorSet = BUILTIN,
    **kw: object,
) -> MatchResult:
    """Scan whole and byte by byte; assert both agree; return the result."""
    data = text.encode() if isinstance(text, str) else text
    whole = _run(detectors, [(content_type, data)], None, **kw)
    bytewise = _run(detectors, [(content_type, data)], 1, **kw)
    assert whole == bytewise
    return whole


def count(text: str | bytes, label: str, **kw: object) -> int:
    stats = scan(text, **kw).labels.get(label)  # type: ignore[arg-type]
    return stats.count if stats else 0


def distinct(text: str, label: str) -> int:
    return scan(text).labels[label].distinct


# -- pii.cn_resident_id ------------------------------------------------------


def test_resident_id_found_at_start_middle_end() -> None:
    assert count(RID, L.CN_RESIDENT_ID) == 1
    assert count(f"身份证号：{RID}。", L.CN_RESIDENT_ID) == 1
    assert count(f"id,{RID}\nid,{RID.lower()}\n", L.CN_RESIDENT_ID) == 2
    assert distinct(f"{RID} {RID.lower()}", L.CN_RESIDENT_ID) == 1


@pytest.mark.parametrize(
    "text",
    [
        "110105194912310021",  # bad check
        "990105194912310028",  # no province 99
        "440524188001010014",  # 1880
        f"1{RID}",  # longer digit run
        f"A{RID}",  # longer alphanumeric run
        f"{RID}5",
        f"0.{RID[:-1]}5",  # a decimal fraction
    ],
)
def test_resident_id_near_misses(text: str) -> None:
    assert count(text, L.CN_RESIDENT_ID) == 0


def _search(rng: random.Random, accept: object) -> str:
    while True:
        body = (
            "6201"
            + "".join(rng.choice("0123456789") for _ in range(2))
            + "19800101"
            + "".join(rng.choice("0123456789") for _ in range(3))
        )
        value = body + chr(V.mod11_2_check_char(body.encode()))
        if value[-1] != "X" and accept(value.encode()):  # type: ignore[operator]
            return value


def test_precedence_resident_id_beats_uscc_and_card() -> None:
    rng = random.Random(11)
    both = _search(rng, lambda v: V.is_uscc(v))
    result = scan(f"x {both} y")
    assert result.labels[L.CN_RESIDENT_ID].count == 1
    assert L.CN_USCC not in result.labels
    card = _search(rng, V.is_bank_card)  # 62… is UnionPay and Gansu
    result = scan(f"x {card} y")
    assert result.labels[L.CN_RESIDENT_ID].count == 1
    assert L.BANK_CARD not in result.labels


# -- org.cn_uscc -------------------------------------------------------------


def test_uscc() -> None:
    assert count(f"统一社会信用代码 {USCC}", L.CN_USCC) == 1
    assert count("91350100M000100Y44", L.CN_USCC) == 0
    assert count(f"X{USCC}", L.CN_USCC) == 0


# -- pii.bank_card -----------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        CARD,
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "card: 6212345678901265,",
        "6212 3456 7890 1265",
        "3782 822463 10005",  # Amex print layout
        "378282246310005",
    ],
)
def test_bank_card_formats(text: str) -> None:
    assert count(text, L.BANK_CARD) == 1


@pytest.mark.parametrize(
    "text",
    [
        "4111111111111112",  # Luhn
        "6011111111111117",  # unknown IIN
        "A4111111111111111X",  # SPEC: holds no card number
        "0.4111111111111111",  # a decimal fraction
        "9 4111 1111 1111 1111",  # grouped run continues to the left
        "4111 1111-1111 1111",  # mixed separators
    ],
)
def test_bank_card_near_misses(text: str) -> None:
    assert count(text, L.BANK_CARD) == 0


def test_bank_card_distinct_over_formats() -> None:
    result = scan(f"{CARD} / 4111 1111 1111 1111 / 4111-1111-1111-1111")
    assert result.labels[L.BANK_CARD].count == 3
    assert result.labels[L.BANK_CARD].distinct == 1


# -- pii.cn_phone ------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "13812345678",
        "+86 13812345678,",  # SPEC
        "+8613812345678",
        "8613812345678",
        "008613812345678",
        "138 1234 5678",
        "138-1234-5678",
        "+86 138 1234 5678",
        "(+86)13812345678",
        "电话13812345678。",
    ],
)
def test_cn_phone_formats(text: str) -> None:
    result = scan(text)
    assert result.labels[L.CN_PHONE].count == 1, text
    assert result.labels[L.CN_PHONE].distinct == 1


@pytest.mark.parametrize(
    "text",
    ["12812345678", "138123456789", "A13812345678", "1381234567", "0.13812345678", "138 12345678"],
)
def test_cn_phone_near_misses(text: str) -> None:
    assert count(text, L.CN_PHONE) == 0


def test_cn_phone_distinct_across_formats() -> None:
    assert distinct("13812345678 +86 138 1234 5678 008613812345678 13912345678", L.CN_PHONE) == 2


# -- pii.hk_phone ------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "+852 2345 6789",
        "+852-2345-6789",
        "(852) 23456789",
        "(852)23456789",
        "85223456789",
        "tel: 23456789",
        "Phone 2345 6789",
        "電話：2345-6789",
        "手机 9876 5432",
        "Mobile: +852 9123 4567",
        "電話23456789",  # a CJK hotword's last byte is the boundary
        "852-23456789",
        "+852 23456789",
        "TEL:23456789",
        "phone\n" + "-" * 20 + "\n23456789",
    ],
)
def test_hk_phone_formats(text: str) -> None:
    assert count(text, L.HK_PHONE) == 1, text


@pytest.mark.parametrize(
    "text",
    [
        "23456789",  # no prefix, no hotword
        "hotel 23456789",  # "tel" inside a word
        "tel " + "x" * 40 + " 23456789",  # hotword too far
        "tel: 12345678",  # must start 2-9
        "tel: 123456789",  # 9 digits
        "tel: 2345 67890",  # longer group
        "tel:x23456789",  # part of a longer alphanumeric run
        "tel: 0.23456789",  # a fraction
        "x852 23456789",  # "852" inside a word is no prefix
        "tel",  # a hotword alone
    ],
)
def test_hk_phone_near_misses(text: str) -> None:
    assert count(text, L.HK_PHONE) == 0


def test_hotword_window_is_32_bytes_before_the_number() -> None:
    assert count("tel" + " " * 29 + "23456789", L.HK_PHONE) == 1  # starts 32 bytes before
    assert count("tel" + " " * 30 + "23456789", L.HK_PHONE) == 0


# -- pii.email ---------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "chan.tai-man+hk@example.com.hk",
        "mail me at Chan@Example.COM.",
        "<a.b_c%d@sub-domain.example.org>",
        "13812345678@qq.com",
    ],
)
def test_email(text: str) -> None:
    assert count(text, L.EMAIL) == 1


@pytest.mark.parametrize("text", ["user@localhost", "a@b.c", "@example.com", "a@-x.com"])
def test_email_near_misses(text: str) -> None:
    assert count(text, L.EMAIL) == 0


def test_email_distinct_is_case_insensitive() -> None:
    assert distinct("Chan@Example.com chan@example.COM", L.EMAIL) == 1


# -- passports and permits ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("passport: E12345678", L.CN_PASSPORT),
        ("护照号码 EA1234567", L.CN_PASSPORT),
        ("Passport No. G12345678", L.CN_PASSPORT),
        ("HKSAR passport K12345678", L.HK_PASSPORT),
        ("護照 H12345678", L.HK_PASSPORT),
        ("回乡证 H1234567801", L.CN_TRAVEL_PERMIT),
        ("回鄉證 M12345678", L.CN_TRAVEL_PERMIT),
        ("通行证 C12345678", L.CN_TRAVEL_PERMIT),
        ("permit CA1234567", L.CN_TRAVEL_PERMIT),
        ("permit H12345678", L.CN_TRAVEL_PERMIT),
    ],
)
def test_travel_documents(text: str, label: str) -> None:
    result = scan(text)
    assert result.labels[label].count == 1
    others = {L.CN_PASSPORT, L.HK_PASSPORT, L.CN_TRAVEL_PERMIT} - {label}
    assert not others & set(result.labels)


@pytest.mark.parametrize(
    "text",
    [
        "E12345678",
        "passport EI1234567",
        "passport E1234567",
        "permit E12345678",
        "passport XE12345678",
    ],
)
def test_travel_document_near_misses(text: str) -> None:
    result = scan(text)
    assert not {L.CN_PASSPORT, L.HK_PASSPORT, L.CN_TRAVEL_PERMIT} & set(result.labels)


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("permit, passport H12345678", L.HK_PASSPORT),  # the nearer hotword decides
        ("passport, permit H12345678", L.CN_TRAVEL_PERMIT),
        ("PASSPORT H12345678", L.HK_PASSPORT),  # hotwords match in any case
        ("permit H12345678 passport K12345678", L.HK_PASSPORT),
    ],
)
def test_travel_document_hotword_choice(text: str, label: str) -> None:
    assert count(text, label) == 1


def test_travel_document_hotword_window_and_word_start() -> None:
    assert count("passport" + " " * 24 + "K12345678", L.HK_PASSPORT) == 1  # 32 bytes before
    assert count("passport" + " " * 25 + "K12345678", L.HK_PASSPORT) == 0
    assert count("xpermit H12345678", L.CN_TRAVEL_PERMIT) == 0  # not a word start
    assert count("xpermit permit H12345678", L.CN_TRAVEL_PERMIT) == 1


# -- pii.hk_id ---------------------------------------------------------------


@pytest.mark.parametrize("text", [HKID, "A1234563", "AB987654(3)", "HKID: AB9876543."])
def test_hkid(text: str) -> None:
    assert count(text, L.HK_ID) == 1


@pytest.mark.parametrize(
    "text", ["A123456(4)", "AB987654(2)", "XA1234563", "A12345637", "a1234563"]
)
def test_hkid_near_misses(text: str) -> None:
    assert count(text, L.HK_ID) == 0


def test_hkid_with_and_without_brackets_is_one_value() -> None:
    assert distinct("A123456(3) A1234563", L.HK_ID) == 1


# -- sensitive.genetic -------------------------------------------------------


def test_genetic_runs_outside_genomic_formats() -> None:
    assert count("seq: " + "ACGT" * 15 + "\n", L.GENETIC) == 1
    assert count("seq: " + "acgtn" * 40 + ".", L.GENETIC) == 1
    assert count("ACGT" * 14 + "ACG", L.GENETIC) == 0  # 59 bases
    assert count("ACGT" * 15 + "\n" + "TTGCA" * 12 + "\n", L.GENETIC) == 2


@pytest.mark.parametrize("seed", range(6))
def test_genetic_runs_match_the_regex_rule_at_any_chunking(seed: int) -> None:
    # Large texts take the sampled path (no run in most chunks), short runs and
    # runs across chunk boundaries the exact one; both must give the rule's hits.
    rng = random.Random(seed)
    pieces: list[bytes] = []
    for _ in range(400):
        roll = rng.random()
        if roll < 0.02:
            pieces.append(bytes(rng.choice(b"ACGTNacgtn") for _ in range(rng.randint(55, 3000))))
        elif roll < 0.3:
            pieces.append(bytes(rng.choice(b"acgtn") for _ in range(rng.randint(1, 70))))
        else:
            pieces.append(rng.choice([b" the cat ", b"tag ", b"\n", b"1234 ", b"gene. "]))
    data = b"".join(pieces)
    expected = token_rule(data)  # the SPEC rule and the token rule, on the whole member
    for chunk in (None, 1, 61, 1024, rng.randint(2, 5000), 70_000):
        stats = _run(BUILTIN, [("text/plain", data)], chunk).labels.get(L.GENETIC)
        found = (stats.count, stats.distinct) if stats else (0, 0)
        assert found == expected, chunk


@pytest.mark.parametrize("filler", [b"the gene ", b"12,3.45;"])  # fine and coarse samples
@pytest.mark.parametrize("length", [59, 60, 61])
def test_genetic_run_carried_across_large_chunks(length: int, filler: bytes) -> None:
    # Chunks large enough for the sampled path, the run cut at every point:
    # its part in the earlier chunk must count toward the 60.
    for cut in range(0, length + 1, 7):
        first = filler * 200 + b"A" * cut
        second = b"C" * (length - cut) + b" " + filler * 200
        m = TextMatcher(BUILTIN, SECRET, today=TODAY)
        m.begin_member("text/plain")
        m.text(first)
        m.text(second)
        stats = m.result().labels.get(L.GENETIC)
        assert (stats.count if stats else 0) == (length >= 60), (length, cut)


def test_fasta_counts_records_not_lines() -> None:
    seq = ("ACGT" * 20 + "\n") * 3
    fasta = f">r1 human\n{seq}>r2\n{seq}>r3\n{seq}"
    assert count(fasta, L.GENETIC, content_type="text/x-fasta") == 3


def test_fastq_counts_records() -> None:
    fastq = "@read1\nACGTACGT\n+\n@@@@IIII\n@read2\nGGGG\n+read2\n+@@I\n"
    assert count(fastq, L.GENETIC, content_type="text/x-fastq") == 2


def test_vcf_counts_data_lines() -> None:
    vcf = "##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\n"
    vcf += "1\t100\t.\tA\tG\n1\t200\t.\tC\tT\n2\t5\t.\tG\tA"
    assert count(vcf, L.GENETIC, content_type="text/x-vcf") == 3


def test_sam_counts_alignment_lines() -> None:
    sam = "@HD\tVN:1.6\n@SQ\tSN:chr1\tLN:1000\nr1\t0\tchr1\t1\t60\t4M\t*\t0\t0\tACGT\tIIII\n"
    sam += "r2\t0\tchr1\t9\t60\t4M\t*\t0\t0\tTTTT\tIIII\n"
    assert count(sam, L.GENETIC, content_type="text/x-sam") == 2


# -- sensitive.health --------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Diagnosis: J45.9",
        "ICD-10 E11",
        "诊断：I10",
        "病歷 C34.1 follow-up",
        "diagnosis J45.909X"[:-1],
    ],
)
def test_health_after_hotword(text: str) -> None:
    assert count(text, L.HEALTH) == 1


@pytest.mark.parametrize(
    "text",
    [
        "J45.9",  # no hotword
        "diagnosis" + " " * 40 + "J45.9",  # too far
        "diagnosis: U07.1",  # U is outside [A-TV-Z]
        "diagnosis: J4",  # too short
        "diagnosis: XJ45",  # longer run
    ],
)
def test_health_near_misses(text: str) -> None:
    assert count(text, L.HEALTH) == 0


def test_health_in_diagnosis_column() -> None:
    csv = "patient,visit,icd10_code,plate\nP1,2025-01-01,J45.9,A01\nP2,2025-01-02,E11,B02\n"
    result = scan(csv, content_type="text/csv")
    assert result.labels[L.HEALTH].count == 2
    assert result.labels[L.HEALTH].distinct == 2
    # The well ids in a column without a diagnosis header never count.
    assert count("plate,well\nP1,A01\nP2,B02\n", L.HEALTH, content_type="text/csv") == 0
    tsv = "id\tdiagnosis\n1\tK21.0\n"
    assert count(tsv, L.HEALTH, content_type="text/tab-separated-values") == 1


def test_code_and_its_subcode_are_one_finding() -> None:
    result = scan("diagnosis: J45.9; diagnosis: J45")
    assert result.labels[L.HEALTH].count == 2
    assert result.labels[L.HEALTH].distinct == 2


# -- geo.precise_location ----------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "22.54321, 114.05678",
        "(22.543210,114.056789)",
        "114.05678 22.54321",
        "lat/long 22.30193;113.91452",
    ],
)
def test_location(text: str) -> None:
    assert count(text, L.PRECISE_LOCATION) == 1


@pytest.mark.parametrize(
    "text",
    [
        "22.5432, 114.0567",
        "39.90420, 116.40739",
        "23.60000, 114.00000",
        "22.54321, 115.10000",
        "-22.54321, 114.05678",
        "122.54321, 114.05678",
    ],
)
def test_location_near_misses(text: str) -> None:
    assert count(text, L.PRECISE_LOCATION) == 0


# -- secret.credential -------------------------------------------------------

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.c2lnbmF0dXJlX2J5dGVz"
PEM = (
    "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\nBKcwggSjAgEAAoIBAQC7\n"
    "-----END PRIVATE KEY-----\n"
)


@pytest.mark.parametrize(
    "text",
    [
        "aws_access_key_id = AKIAIOSFODNN7EXAMPLE",
        "ASIAIOSFODNN7EXAMPLE",
        "token ghp_" + "a1B2" * 9,
        f"Authorization: Bearer {JWT}",
        PEM,
        PEM.replace("PRIVATE KEY", "RSA PRIVATE KEY"),
    ],
)
def test_credentials(text: str) -> None:
    assert count(text, L.CREDENTIAL) == 1


@pytest.mark.parametrize(
    "text",
    [
        "AKIAIOSFODNN7EXAMPL",
        "XAKIAIOSFODNN7EXAMPLE",
        "ghp_" + "a" * 35,
        "eyJhbGci.notjwt",
        "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----",
    ],
)
def test_credential_near_misses(text: str) -> None:
    assert count(text, L.CREDENTIAL) == 0


# -- markings ----------------------------------------------------------------


@pytest.mark.parametrize("text", ["机密★", "绝密★5年", "秘密 ★", "本文件属國家秘密", "機密★"])
def test_cn_marking(text: str) -> None:
    assert count(text, L.CN_CLASSIFIED) == 1


@pytest.mark.parametrize("text", ["机密", "秘密文件", "国家"])
def test_cn_marking_near_misses(text: str) -> None:
    assert count(text, L.CN_CLASSIFIED) == 0


@pytest.mark.parametrize(
    "text",
    [
        "TOP SECRET\nbody",
        "memo\n  CONFIDENTIAL  \n",
        "RESTRICTED (STAFF)\r\n",
        "SECRET",
        "x\n限閱文件\n",
        "機密",
    ],
)
def test_hk_marking(text: str) -> None:
    assert count(text, L.HK_CLASSIFIED) == 1


@pytest.mark.parametrize(
    "text", ["This is SECRET stuff", "secret\n", "TOP SECRETS\n", "CONFIDENTIAL memo\n"]
)
def test_hk_marking_near_misses(text: str) -> None:
    assert count(text, L.HK_CLASSIFIED) == 0


# -- unscannable, members, counting -----------------------------------------


def test_unscannable_reasons_and_count() -> None:
    m = TextMatcher(BUILTIN, SECRET, today=TODAY)
    m.unscannable("zip: encrypted member")
    m.unscannable("gzip: ratio over 100:1")
    result = m.result()
    assert result.labels[L.UNSCANNABLE].count == 2
    assert result.unscannable == ("zip: encrypted member", "gzip: ratio over 100:1")


def test_identifiers_never_span_members() -> None:
    members = [("text/plain", b"1381234"), ("text/plain", b"5678 ok")]
    result = _run(BUILTIN, members, None)
    assert L.CN_PHONE not in result.labels


def test_digests_are_truncated_keyed_hmacs_of_canonical_values() -> None:
    result = scan("+86 138 1234 5678")
    expected = hmac.new(SECRET, b"pii.cn_phone\x0013812345678", hashlib.sha256).digest()[:16]
    assert result.digests[L.CN_PHONE] == frozenset({expected})
    assert KeyedHasher(SECRET).digest(b"abc") == hmac.new(SECRET, b"abc", "sha256").digest()[:16]
    long_key = b"k" * 100
    assert (
        KeyedHasher(long_key).digest(b"abc") == hmac.new(long_key, b"abc", "sha256").digest()[:16]
    )


def test_subjects_is_largest_personal_distinct() -> None:
    result = scan(f"{RID} 13812345678 13912345678 13712345678 {USCC}")
    assert result.subjects == 3


def test_distinct_cap_makes_lower_bounds() -> None:
    text = " ".join(f"1380000{i:04d}" for i in range(10))
    result = scan(text, max_distinct=4)
    assert result.labels[L.CN_PHONE].count == 10
    assert result.labels[L.CN_PHONE].distinct == 4
    assert result.distinct_capped
    assert not scan(text).distinct_capped


def test_secret_must_be_long_enough() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        TextMatcher(BUILTIN, b"short")


# -- custom detectors --------------------------------------------------------


def test_custom_regex_with_hotword_validator_and_personal() -> None:
    det = CustomDetector(
        label="custom.staff_card",
        patterns=(r"[0-9]{4}-[0-9]{4}-[0-9]{4}-[0-9]{4}",),
        hotwords=("staff card",),
        validator="luhn",
        personal=True,
    )
    ds = DetectorSet.build([det])
    result = scan("staff card: 4111-1111-1111-1111 and 4111-1111-1111-1112", detectors=ds)
    assert result.labels["custom.staff_card"].count == 1
    assert result.subjects == 1
    assert count("4111-1111-1111-1111", "custom.staff_card", detectors=ds) == 0  # no hotword


def test_custom_keywords_case_and_boundary() -> None:
    det = CustomDetector(
        label="custom.project", keywords=("Falcon", "鸿雁计划"), case_sensitive=False
    )
    ds = DetectorSet.build([det])
    result = scan("FALCON falcon Falcons 鸿雁计划", detectors=ds)
    assert result.labels["custom.project"].count == 3
    assert result.labels["custom.project"].distinct == 2
    assert result.subjects == 0
    strict = DetectorSet.build([CustomDetector(label="custom.p", keywords=("Falcon",))])
    assert count("FALCON Falcon", "custom.p", detectors=strict) == 1


@pytest.mark.parametrize(
    "text",
    ["permit EA123456789", "passport AB12345678", "permit H123456789", "passport K1234567890"],
)
def test_letter_led_tokens_of_other_shapes(text: str) -> None:
    result = scan(text)
    assert not {L.CN_PASSPORT, L.HK_PASSPORT, L.CN_TRAVEL_PERMIT, L.HK_ID} & set(result.labels)


# -- reviewer findings: grouped numbers, boundaries, caps, columns, formats --


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("Chen 138-1234-5678 2026-01-01", L.CN_PHONE),  # another separator follows
        ("card 6222-0212-3456-7894 12/28", L.BANK_CARD),
        ("4111 1111 1111 1111 123", L.BANK_CARD),  # a CVV; 19 digits fail Luhn
        ("张三 138 1234 5678 25 岁", L.CN_PHONE),
        ("Chen 2026-01-01 138 1234 5678", L.CN_PHONE),  # a date's last group before
        ("tel 2345 6789 12", L.HK_PHONE),
    ],
)
def test_grouped_number_followed_by_more_digits(text: str, label: str) -> None:
    result = scan(text)
    assert result.labels[label].count == 1, text
    assert set(result.labels) == {label}, text


@pytest.mark.parametrize("text", ["tel 2345 6789 1234", "4111 1111 1111 1111 1234"])
def test_grouped_number_followed_by_a_full_group_is_a_longer_run(text: str) -> None:
    assert scan(text).labels == {}


def test_longer_grouped_number_that_validates_wins() -> None:
    # 19-digit UnionPay card in fours: its 16-digit prefix is not a second finding.
    body = "622202123456789"
    digits = next(
        body + f"{i:04d}" for i in range(10_000) if V.is_bank_card((body + f"{i:04d}").encode())
    )
    grouped = " ".join(digits[i : i + 4] for i in range(0, 19, 4))
    result = scan(f"card {grouped} ok")
    assert result.labels[L.BANK_CARD].count == 1
    assert result.digests[L.BANK_CARD] == scan(digits).digests[L.BANK_CARD]


@pytest.mark.parametrize(
    ("text", "counts"),
    [
        ("id 440305198412252041 138 1234 5678", {L.CN_RESIDENT_ID: 1, L.CN_PHONE: 1}),
        ("6222021234567894 6222 0212 3456 7894", {L.BANK_CARD: 2}),
        ("9 4111 1111 1111 1111", {}),  # a group-sized run goes on to the left
    ],
)
def test_grouped_number_after_a_long_digit_run(text: str, counts: dict[str, int]) -> None:
    result = scan(text)
    assert {k: v.count for k, v in result.labels.items()} == counts


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("No.440305198412252041", L.CN_RESIDENT_ID),
        ("HKID No.A123456(3)", L.HK_ID),
        ("HKID No.A1234563", L.HK_ID),
        ("Mob.13812345678", L.CN_PHONE),
        ("Mob.138 1234 5678", L.CN_PHONE),
        ("card no.6222021234567894", L.BANK_CARD),
        ("Tel.23456789", L.HK_PHONE),
        ("USCC No.91350100M000100Y43", L.CN_USCC),
    ],
)
def test_dot_before_identifier_is_a_boundary(text: str, label: str) -> None:
    assert count(text, label) == 1


@pytest.mark.parametrize(
    "text", ["0.13812345678", "1.138 1234 5678", "3.440305198412252041", "5.91350100M000100Y43"]
)
def test_digit_and_dot_before_identifier_is_a_fraction(text: str) -> None:
    assert scan(text).labels == {}


def test_distinct_bound_is_per_label() -> None:
    phones = " ".join(f"1380000{i:04d}" for i in range(10))
    mails = " ".join(f"u{i}@example.com" for i in range(10))
    result = scan(f"{mails} {phones}", max_distinct=4)
    assert result.labels[L.EMAIL].distinct == 4
    assert result.labels[L.CN_PHONE].distinct == 4  # not starved by the e-mails
    assert result.distinct_capped
    total = scan(f"{mails} {phones}", max_distinct=100, max_distinct_total=12)
    assert total.labels[L.EMAIL].distinct + total.labels[L.CN_PHONE].distinct == 12
    assert total.distinct_capped
    assert not scan(f"{mails} {phones}", max_distinct=10).distinct_capped


@pytest.mark.parametrize(
    ("csv", "expected"),
    [
        (
            'name,address,diagnosis\n"Chen, Wei","Shenzhen, Nanshan",E11.9\n'
            '"Li, Na","Futian, Shenzhen",J45.9\n"Wong","HK",I10\n',
            3,
        ),
        ("id;diagnosis;plate\n1;E11.9;A01\n2;J45;B02\n3;I10;C03\n4;K21.0;D04\n", 4),
        ('"id","diagnosis, primary","plate"\n1,E11.9,A01\n2,J45,B02\n', 2),
        ("patient,diagnosis,plate\nA,E11.9,A01\nB,J45,B02\n", 2),  # not the header's window
        # The name is whole only without its quotes (the cells are read so).
        ('id,"Diag""nosis",plate\n1,E11.9,A01\n2,J45,B02\n', 2),
    ],
)
def test_diagnosis_column_quotes_and_delimiters(csv: str, expected: int) -> None:
    assert count(csv, L.HEALTH, content_type="text/csv") == expected


@pytest.mark.parametrize(
    "text", ["diagnosis E11.12345", "diagnosis E11.9.1", "diagnosis: J45.90000", "icd E11.A1234"]
)
def test_code_that_goes_on_is_no_code(text: str) -> None:
    assert count(text, L.HEALTH) == 0


@pytest.mark.parametrize("text", ["diagnosis E11.", "diagnosis: J45.9.", "icd E11, J45"])
def test_code_before_a_full_stop(text: str) -> None:
    assert count(text, L.HEALTH) >= 1


def test_fasta_counts_only_nucleotide_records() -> None:
    dna = ("ACGT" * 20 + "\n") * 2
    protein = ("MKVLAAGIVGLLLAEFPQWERTYIPASDFGHKLCVNM" * 2 + "\n") * 2
    fasta = f">r1\n{dna}>p1 protein\n{protein}>r2\nACGTNNACGU\n>p2\nMEEPQSDPSV\n>empty\n"
    result = scan(fasta, content_type="text/x-fasta")
    assert result.labels[L.GENETIC].count == 2
    assert result.labels[L.GENETIC].distinct == 2


def test_protein_fasta_is_plain_text() -> None:
    protein = ">sp|P04637|P53_HUMAN\n" + (
        "MEEPQSDPSVEPPLSQETFSDLWKLLPENNVLSPLPSQAMDDLMLSPDDIEQWFTEDPGP\n" * 3
    )
    assert count(protein, L.GENETIC, content_type="text/x-fasta-protein") == 0


PEM_BODY = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\nBKcwggSjAgEAAoIBAQC7\n"


@pytest.mark.parametrize(
    ("text", "findings"),
    [
        ("-----BEGIN PRIVATE KEY-----\n" + PEM_BODY, 1),  # truncated: no END
        ("x\n" + PEM + PEM, 2),  # one per block, not per line
        (PEM + "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEI\n", 2),
        ("-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBF" + "x" * 300 + "\n", 1),
        (
            "-----BEGIN PGP PRIVATE KEY BLOCK-----\nComment: k\n\nlQOY\n"
            "-----END PGP PRIVATE KEY BLOCK-----\n",
            1,
        ),
        ("...base64 tail\n-----END RSA PRIVATE KEY-----\n", 1),  # BEGIN cut off
        ("-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----\n", 0),
    ],
)
def test_private_key_blocks(text: str, findings: int) -> None:
    assert count(text, L.CREDENTIAL) == findings


def test_private_key_block_identity_is_chunking_independent() -> None:
    long_body = ("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJz" + "\n") * 80
    truncated = "-----BEGIN PRIVATE KEY-----\n" + long_body
    complete = truncated + "-----END PRIVATE KEY-----\n"
    result = scan(f"{complete}\n{truncated}")
    assert result.labels[L.CREDENTIAL].count == 2
    assert result.labels[L.CREDENTIAL].distinct == 1  # the same key, whole and truncated
    for chunk in (7, 61, 255, 256, 257, 4096):
        assert _run(BUILTIN, [("text/plain", f"{complete}\n{truncated}".encode())], chunk) == result


@pytest.mark.parametrize(
    "text",
    [
        '{"lat": 22.54321, "lon": 114.05678}',
        "lat=22.54321&lng=114.05678",
        '{"longitude":114.05678,"latitude":22.54321}',
        "22.54321,114.05678",
    ],
)
def test_keyed_coordinate_pairs(text: str) -> None:
    assert count(text, L.PRECISE_LOCATION) == 1


@pytest.mark.parametrize(
    "text", ["22.54321, 5, 114.05678", "lat=22.54321&note=a&lng=114.05678", "22.54321 mm 114.05678"]
)
def test_coordinates_with_more_than_a_key_between(text: str) -> None:
    assert count(text, L.PRECISE_LOCATION) == 0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("telemetry 23456789", 0),
        ("phoneme 23456789", 0),
        ("mobile-phone: 23456789", 1),
        ("passports K12345678", 0),
        ("Tel 23456789", 1),
    ],
)
def test_ascii_hotwords_are_whole_words(text: str, expected: int) -> None:
    labels = scan(text).labels
    assert sum(labels[k].count for k in (L.HK_PHONE, L.HK_PASSPORT) if k in labels) == expected


# -- content.unscannable: armored encrypted text -----------------------------

PGP_ARMOR = (
    "-----BEGIN PGP MESSAGE-----\n\nhQEMA5xyz0123456789abcdef\n=abcd\n-----END PGP MESSAGE-----\n"
)
AGE_ARMOR = (
    "-----BEGIN AGE ENCRYPTED FILE-----\nYWdlLWVuY3J5cHRpb24ub3JnL3Yx\n"
    "-----END AGE ENCRYPTED FILE-----\n"
)


@pytest.mark.parametrize(
    ("armor", "reason"),
    [(PGP_ARMOR, "pgp: encrypted content"), (AGE_ARMOR, "age: encrypted content")],
)
def test_armored_encrypted_text_is_unscannable_wherever_it_starts(armor: str, reason: str) -> None:
    # Far past the decoder's 64 KiB sniff prefix: still one finding, and the
    # text around it is still scanned.
    text = "notes " * 20_000 + armor + "tel 13812345678\n"
    result = scan(text)
    assert result.unscannable == (reason,)
    assert result.labels[L.UNSCANNABLE].count == 1
    assert result.labels[L.CN_PHONE].count == 1


def test_armor_counts_once_per_member_and_once_in_each_member() -> None:
    twice = (PGP_ARMOR + "between\n" + PGP_ARMOR).encode()
    assert scan(twice).labels[L.UNSCANNABLE].count == 1
    both = (PGP_ARMOR + AGE_ARMOR).encode()
    assert scan(both).unscannable == ("pgp: encrypted content", "age: encrypted content")
    members = [("text/plain", twice), ("text/csv", b"a,b\n" + PGP_ARMOR.encode())]
    for chunk in (None, 7):
        assert _run(BUILTIN, members, chunk).labels[L.UNSCANNABLE].count == 2


@pytest.mark.parametrize(
    "near_miss",
    [
        "-----BEGIN PGP PUBLIC KEY BLOCK-----\n",  # a public key is no encrypted content
        "-----BEGIN PGP SIGNED MESSAGE-----\n",  # clear-signed text is readable
        "----BEGIN PGP MESSAGE-----\n",  # four dashes
        "-----BEGIN AGE ENCRYPTED FILE----\n",
    ],
)
def test_other_armor_lines_are_not_encrypted_content(near_miss: str) -> None:
    assert count(near_miss + "text\n", L.UNSCANNABLE) == 0
