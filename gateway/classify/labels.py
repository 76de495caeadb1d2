"""Stable label ids (SPEC §3.1). Policies, tests and metrics use these names."""

from __future__ import annotations

from typing import Final

CN_RESIDENT_ID: Final = "pii.cn_resident_id"
HK_ID: Final = "pii.hk_id"
CN_PHONE: Final = "pii.cn_phone"
HK_PHONE: Final = "pii.hk_phone"
EMAIL: Final = "pii.email"
CN_PASSPORT: Final = "pii.cn_passport"
HK_PASSPORT: Final = "pii.hk_passport"
CN_TRAVEL_PERMIT: Final = "pii.cn_travel_permit"
BANK_CARD: Final = "pii.bank_card"
CN_USCC: Final = "org.cn_uscc"
GENETIC: Final = "sensitive.genetic"
HEALTH: Final = "sensitive.health"
PRECISE_LOCATION: Final = "geo.precise_location"
CREDENTIAL: Final = "secret.credential"
CN_CLASSIFIED: Final = "marking.cn_classified"
HK_CLASSIFIED: Final = "marking.hk_classified"
UNSCANNABLE: Final = "content.unscannable"

#: Every built-in label, in the order of SPEC §3.1.
BUILTIN_LABELS: Final[tuple[str, ...]] = (
    CN_RESIDENT_ID,
    HK_ID,
    CN_PHONE,
    HK_PHONE,
    EMAIL,
    CN_PASSPORT,
    HK_PASSPORT,
    CN_TRAVEL_PERMIT,
    BANK_CARD,
    CN_USCC,
    GENETIC,
    HEALTH,
    PRECISE_LOCATION,
    CREDENTIAL,
    CN_CLASSIFIED,
    HK_CLASSIFIED,
    UNSCANNABLE,
)

#: When one run of characters validates as several labels it is one finding, of
#: the first label in this order (SPEC §3.1, "Boundaries and precedence").
PRECEDENCE: Final[tuple[str, ...]] = (
    CN_RESIDENT_ID,
    CN_USCC,
    BANK_CARD,
    CN_PHONE,
    HK_PHONE,
)

#: Prefix of labels declared by a policy's custom detectors.
CUSTOM_PREFIX: Final = "custom."


def is_known_label(label: str) -> bool:
    """True for a built-in label or a syntactically valid ``custom.`` label."""
    if label in BUILTIN_LABELS:
        return True
    rest = label.removeprefix(CUSTOM_PREFIX)
    return rest != label and bool(rest) and all(c.isalnum() or c in "_-." for c in rest)
