"""The policy file schema, as compliance officers write it (SPEC §4).

Each YAML file in a policy directory validates against :class:`PolicyFile`
(pydantic v2, ``extra="forbid"``, frozen); the loader merges the files into
one set and checks what needs the whole set (labels, names, reachability).
Value types that have a small grammar of their own (globs, comparisons,
sizes, age recipients) are parsed here, once, into small frozen objects, so
the engine never parses text at evaluation time.

The comparison grammar is deliberately tiny and declarative (no ``eval``)::

    threshold := OP NUMBER [UNIT]     e.g. ">= 100000", "< 10_000", "> 1 GiB"
    OP        := ">=" | ">" | "<=" | "<" | "==" | "!="
    UNIT      := B | KB | MB | GB | TB | KiB | MiB | GiB | TiB   (sizes only)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
    model_validator,
)

from gateway.classify.detectors import HOTWORD_WINDOW, MAX_HOTWORD_WINDOW

Direction = Literal["hk->sz", "sz->hk"]
Action = Literal["allow", "block", "review"]
EncryptMode = Literal["envelope", "tls"]
#: What chance-level findings in table columns do (issue 14): set aside (the
#: column test, the default) or count like any other.
ChanceMode = Literal["test", "count"]
#: The parks of the Hetao zone a route's destination can lie in (``park``).
PARKS: Final = ("hk-park", "sz-park")
Park = Literal["hk-park", "sz-park"]
Mode = Literal["enforce", "shadow"]

#: The legal bases a route may declare, each an instrument in REGULATIONS.md.
LEGAL_BASES: Final[Mapping[str, str]] = {
    # GBA Standard Contract (Mainland, Hong Kong), published 13 December 2023.
    "gba-standard-contract": "GBA Standard Contract for cross-boundary personal information",
    # PIPL Art. 38: standard contract, one of the three export mechanisms
    # (sub-paragraph number unconfirmed); CAC Measures on the Standard Contract (2023).
    "cac-standard-contract": "CAC standard contract for personal information export",
    # PIPL Art. 38: personal information protection certification.
    "pi-certification": "personal information protection certification",
    # PIPL Art. 38; CAC security assessment of outbound data transfers.
    "cac-security-assessment": "CAC security assessment",
    # PCPD Recommended Model Contractual Clauses (12 May 2022), Hong Kong best
    # practice for personal data leaving Hong Kong (PDPO s. 33 is not in operation).
    "pcpd-model-clauses": "PCPD Recommended Model Contractual Clauses",
}
#: In a rule's ``legal_basis`` condition: a route that declares no legal basis.
NO_LEGAL_BASIS: Final = "none"
#: The directions whose transfers the yearly ledger counts unless a policy says
#: otherwise. REGULATIONS.md: the 2024 Provisions' thresholds count data provided
#: abroad from the Mainland (Shenzhen -> Hong Kong); Hong Kong -> Shenzhen falls
#: under the PDPO, which has no volume thresholds.
DEFAULT_LEDGER_DIRECTIONS: Final[tuple[Direction, ...]] = ("sz->hk",)

#: A reason is returned to the sender in the verdict; a paragraph is plenty.
MAX_REASON_CHARS = 600
#: Identifiers (rule ids, names) are shown in metrics labels and logs: keep them short.
MAX_NAME_CHARS = 128
#: Client-certificate subject CNs are at most 64 characters (RFC 5280 ub-common-name);
#: bearer-token identities are operator-chosen. 256 covers both with margin.
MAX_IDENTITY_CHARS = 256
#: Thresholds count people or bytes; 2**63 is the largest count the ledger can hold.
MAX_THRESHOLD = (1 << 63) - 1

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]*")
_RULE_ID_RE = re.compile(r"[a-z0-9][a-z0-9_.-]*")
_GLOB_FORBIDDEN = frozenset("[]{}\\")
_THRESHOLD_RE = re.compile(r"\s*(>=|<=|==|!=|>|<)\s*([0-9][0-9_,]*)\s*([A-Za-z]*)\s*")
#: A number whose thousands are separated (by one kind of separator, in threes).
_GROUPED_RE = re.compile(r"[0-9]{1,3}(?:,[0-9]{3})+|[0-9]{1,3}(?:_[0-9]{3})+")
_SIZE_UNITS: Final[Mapping[str, int]] = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KiB": 1 << 10,
    "MiB": 1 << 20,
    "GiB": 1 << 30,
    "TiB": 1 << 40,
}
_OPS: Final[Mapping[str, Callable[[int, int], bool]]] = {
    ">=": lambda a, b: a >= b,
    ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    "<": lambda a, b: a < b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}
# bech32 (BIP 173) alphabet and generator, for checking age1 recipients (C2SP age spec).
_BECH32 = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_BECH32_GEN = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
#: An X25519 recipient is 32 bytes: 52 bech32 characters of data plus a 6-character checksum.
_AGE_DATA_CHARS = 58


@dataclass(frozen=True, slots=True)
class Threshold:
    """A comparison against a number, such as ``>= 100000``.

    Attributes:
        op: one of ``>= > <= < == !=``.
        value: the number compared against (bytes for sizes).
        text: the comparison as written, normalised (for traces).
    """

    op: str
    value: int
    text: str

    def test(self, actual: int) -> bool:
        """Whether ``actual OP value`` holds."""
        return _OPS[self.op](actual, self.value)

    def __str__(self) -> str:
        return self.text


def _parse_threshold(raw: object, *, sizes: bool) -> Threshold:
    if isinstance(raw, Threshold):
        return raw
    example = "'> 100 MiB'" if sizes else "'>= 100000'"
    if not isinstance(raw, str):
        raise ValueError(f"expected a comparison string such as {example}")
    m = _THRESHOLD_RE.fullmatch(raw)
    if m is None:
        raise ValueError(f"expected a comparison such as {example}, got {raw.strip()[:40]!r}")
    op, digits, unit = m.groups()
    if unit and not sizes:
        raise ValueError(f"a count takes no unit (got {unit!r}); write e.g. {example}")
    if unit not in _SIZE_UNITS:
        raise ValueError(
            f"unknown size unit {unit!r}; expected one of B, KB, MB, GB, KiB, MiB, GiB"
        )
    if ("," in digits or "_" in digits) and not _GROUPED_RE.fullmatch(digits):
        raise ValueError(
            f"ambiguous number {digits!r}: separate thousands in groups of three "
            "(10,000 or 100_000), or write the digits alone"
        )
    value = int(digits.replace("_", "").replace(",", "")) * _SIZE_UNITS[unit]
    if value > MAX_THRESHOLD:
        raise ValueError("number too large")
    text = f"{op} {digits}{' ' + unit if unit else ''}"
    return Threshold(op, value, text)


def _serialize_threshold(t: Threshold) -> str:
    return f"{t.op} {t.value}"


CountThreshold = Annotated[
    Threshold,
    BeforeValidator(lambda v: _parse_threshold(v, sizes=False)),
    PlainSerializer(_serialize_threshold),
]
SizeThreshold = Annotated[
    Threshold,
    BeforeValidator(lambda v: _parse_threshold(v, sizes=True)),
    PlainSerializer(_serialize_threshold),
]


def check_glob(value: object) -> str:
    """Validate a glob: ``*`` matches any run of characters, ``?`` exactly one.

    Character classes and braces are refused rather than half-supported, so a
    glob means the same thing to every reader.
    """
    if not isinstance(value, str):
        raise ValueError("expected a string glob such as 'pii.*'")
    if not value:
        raise ValueError("an empty glob matches nothing")
    bad = sorted(set(value) & _GLOB_FORBIDDEN)
    if bad:
        raise ValueError(
            f"bad glob {value[:60]!r}: only '*' and '?' are wildcards "
            f"({''.join(bad)!r} not allowed)"
        )
    if any(ord(c) < 0x20 for c in value) or len(value) > MAX_IDENTITY_CHARS:
        raise ValueError("bad glob: control characters or too long")
    return value


def glob_to_regex(glob: str) -> re.Pattern[str]:
    """Compile a checked glob to an anchored regular expression."""
    parts = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in glob)
    return re.compile("".join(parts), re.DOTALL)


def is_glob(value: str) -> bool:
    """Whether ``value`` contains a wildcard (otherwise it names one thing)."""
    return "*" in value or "?" in value


def _one_or_many(value: object) -> object:
    # `route: sz-lab` and `route: [sz-lab, sz-clinical]` both read naturally.
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and not value:
        raise ValueError("an empty list matches nothing; remove the key instead")
    return value


Glob = Annotated[str, BeforeValidator(check_glob)]
Globs = Annotated[tuple[Glob, ...], BeforeValidator(_one_or_many)]


def check_name(value: object) -> str:
    """Validate a route, team, organisation or category name."""
    if not isinstance(value, str) or not _NAME_RE.fullmatch(value):
        raise ValueError(
            "expected a name of letters, digits and '_.:@-' starting with a letter or digit"
        )
    if len(value) > MAX_NAME_CHARS:
        raise ValueError(f"name longer than {MAX_NAME_CHARS} characters")
    return value


def check_identity(value: object) -> str:
    """Validate a sender identity (a certificate CN or a token's identity)."""
    if not isinstance(value, str) or not value.strip() or value != value.strip():
        raise ValueError("expected a non-empty sender identity without surrounding spaces")
    if len(value) > MAX_IDENTITY_CHARS or any(ord(c) < 0x20 or c in "*?" for c in value):
        raise ValueError("sender identity has control characters, wildcards or is too long")
    return value


Name = Annotated[str, BeforeValidator(check_name)]
Identity = Annotated[str, BeforeValidator(check_identity)]


def check_rule_id(value: object, *, allow_default: bool = False) -> str:
    """Validate a rule id; ``default`` names the default block, so rules may not use it."""
    if allow_default and value == "default":
        return value
    if not isinstance(value, str) or not _RULE_ID_RE.fullmatch(value):
        raise ValueError("expected a rule id of lower-case letters, digits and '_.-'")
    if len(value) > MAX_NAME_CHARS:
        raise ValueError(f"rule id longer than {MAX_NAME_CHARS} characters")
    if value == "default":
        raise ValueError("'default' is reserved for the default block")
    return value


def _check_reason(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a non-empty reason (it is returned to the sender)")
    text = " ".join(value.split())
    if len(text) > MAX_REASON_CHARS:
        raise ValueError(f"reason longer than {MAX_REASON_CHARS} characters")
    return text


RuleId = Annotated[str, BeforeValidator(check_rule_id)]
Reason = Annotated[str, BeforeValidator(_check_reason)]


def _bech32_polymod(values: list[int]) -> int:
    chk = 1
    for v in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ v
        for i, g in enumerate(_BECH32_GEN):
            chk ^= g if (top >> i) & 1 else 0
    return chk


def check_age_recipient(value: str) -> str:
    """Validate an age X25519 recipient (``age1…``, bech32 with checksum).

    Raises:
        ValueError: with what was expected; the key is public, but the message
            still shows only its first characters.
    """
    key = value.strip()
    if key.upper().startswith("AGE-SECRET-KEY-"):
        raise ValueError("this is an age secret key; give the public recipient (age1…)")
    lower = key.lower()
    if key not in (lower, key.upper()) or not lower.startswith("age1"):
        raise ValueError("expected an age X25519 recipient starting with 'age1'")
    data = lower[4:]
    if len(data) != _AGE_DATA_CHARS or any(c not in _BECH32 for c in data):
        raise ValueError(f"malformed age recipient {key[:12]!r}…: wrong length or characters")
    hrp = [ord(c) >> 5 for c in "age"] + [0] + [ord(c) & 31 for c in "age"]
    if _bech32_polymod(hrp + [_BECH32.index(c) for c in data]) != 1:
        raise ValueError(f"age recipient {key[:12]!r}… has a bad checksum (typo?)")
    return lower


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RecipientFile(_Model):
    """A recipient key read from a file (one ``age1…`` line; ``#`` comments allowed).

    The path is relative to the policy file. Used when keys are generated per
    machine (``make run``) or mounted by the deployment.
    """

    file: str = Field(min_length=1)


def _recipient(value: object) -> object:
    if value is None or isinstance(value, RecipientFile):
        return value
    if isinstance(value, dict):
        path = value.get("file")
        if set(value) != {"file"} or not isinstance(path, str) or not path:
            raise ValueError("expected {file: path-to-recipient-file}")
        return RecipientFile(file=path)
    if isinstance(value, str):
        return check_age_recipient(value)
    raise ValueError("expected an age recipient 'age1…' or {file: path}")


def _check_destination(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError("expected an https:// URL")
    parts = urlsplit(value)
    loopback = parts.hostname in ("127.0.0.1", "::1", "localhost")
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback):
        raise ValueError("expected an https:// URL (http:// only for loopback test endpoints)")
    if not parts.hostname or parts.username or parts.password:
        raise ValueError("expected an https:// URL with a host and no credentials")
    try:
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError as exc:
        raise ValueError("bad port in URL") from exc
    return value


class DetectorSpec(_Model):
    """A custom detector (SPEC §3.1): regex patterns or a keyword list.

    Attributes:
        patterns: Hyperscan-compatible regular expressions.
        keywords: literal words or phrases.
        hotwords: if given, a match counts only with one of these within
            ``window`` bytes before it.
        window: the hotword window in bytes (SPEC §3.1 uses 32 for built-ins).
        validator: name of a built-in validator run on each candidate.
        case_sensitive: match case exactly (default: ignore case, which is
            what an officer listing project names expects).
        personal: findings identify people (they count towards ``subjects``).
        boundary: a match must not be part of a longer run of letters and digits.
    """

    patterns: tuple[str, ...] = ()
    keywords: tuple[str, ...] = ()
    hotwords: tuple[str, ...] = ()
    window: int = Field(default=HOTWORD_WINDOW, ge=1, le=MAX_HOTWORD_WINDOW)
    validator: str | None = None
    case_sensitive: bool = False
    personal: bool = False
    boundary: bool = True

    @model_validator(mode="after")
    def _one_kind(self) -> DetectorSpec:
        if bool(self.patterns) == bool(self.keywords):
            raise ValueError("a detector needs either 'patterns' or 'keywords' (exactly one)")
        if any(not p for p in (*self.patterns, *self.keywords, *self.hotwords)):
            raise ValueError("empty pattern, keyword or hotword")
        return self


class SenderSpec(_Model):
    """Who a sender identity belongs to."""

    team: Name
    organisation: Name


class OrganisationSpec(_Model):
    """What the policy knows about an organisation (the top-level ``organisations``).

    ``gba_registered``: registered in one of the nine Mainland GBA cities or in
    Hong Kong, as the GBA Standard Contract requires of both parties.
    """

    gba_registered: bool = False


class RouteSpec(_Model):
    """A route as declared (the recipient may still be a file reference)."""

    direction: Direction
    destination: Annotated[str, BeforeValidator(_check_destination)]
    recipient: Annotated[str | RecipientFile | None, BeforeValidator(_recipient)] = None
    legal_basis: str | None = None
    encrypt: EncryptMode = "envelope"
    #: ``count``: on this route chance-level findings count (a false block is
    #: cheaper here than a miss); unset is ``test``.
    chance: ChanceMode | None = None
    #: The park of the Hetao zone the destination lies in (``hk-park``: the Hong
    #: Kong Park; ``sz-park``: the Shenzhen Park); unset: anywhere else.
    park: Park | None = None
    #: The recipient at the destination is registered in the GBA (nine Mainland
    #: cities or Hong Kong); unset: not known to be.
    recipient_gba_registered: bool | None = None

    @field_validator("legal_basis")
    @classmethod
    def _basis(cls, value: str | None) -> str | None:
        if value is not None and value not in LEGAL_BASES:
            raise ValueError(f"unknown legal basis; expected one of {', '.join(LEGAL_BASES)}")
        return value


class PresenceCondition(_Model):
    """Presence and counts of labels (globs) or of categories (names).

    ``any``: at least one is present; ``all``: every one is present; ``none``:
    none is present; ``count``/``distinct``: findings or distinct values,
    summed over what the key names, compared with a threshold.
    """

    any: Globs | None = None
    all: Globs | None = None
    none: Globs | None = None
    count: dict[Glob, CountThreshold] | None = None
    distinct: dict[Glob, CountThreshold] | None = None


class AttributeCondition(_Model):
    """The values of one content attribute (``organism``), as globs.

    ``any``: at least one value matches; ``all``: every glob matches a value;
    ``none``: no value matches. An attribute the content does not state has
    the one value ``unknown`` (:data:`gateway.classify.attributes.UNKNOWN`),
    so "not stated" can be named: ``organism: {any: [Homo sapiens, unknown]}``.
    """

    any: Globs | None = None
    all: Globs | None = None
    none: Globs | None = None

    @model_validator(mode="after")
    def _something(self) -> AttributeCondition:
        if self.any is None and self.all is None and self.none is None:
            raise ValueError("give 'any', 'all' and/or 'none', e.g. any: [Homo sapiens, unknown]")
        return self


def _attributes(value: object) -> object:
    if isinstance(value, dict) and not value:
        raise ValueError("an empty mapping matches everything; remove the key instead")
    return value


class LedgerCondition(_Model):
    """An organisation's distinct subjects this calendar year in one category.

    ``current`` is what the ledger holds; ``projected`` includes this transfer
    (the union: people already counted are not counted twice).
    """

    current: CountThreshold | None = None
    projected: CountThreshold | None = None

    @model_validator(mode="after")
    def _something(self) -> LedgerCondition:
        if self.current is None and self.projected is None:
            raise ValueError("give 'current' and/or 'projected', e.g. projected: '>= 100000'")
        return self


def _directions(value: object) -> object:
    return _one_or_many(value)


class LedgerSpec(_Model):
    """What the yearly ledger counts (the top-level ``ledger`` section).

    Attributes:
        directions: the route directions whose allowed transfers add their
            subjects to the sender organisation's yearly totals. Transfers in
            other directions are evaluated against the totals but add nothing.
    """

    directions: Annotated[tuple[Direction, ...], BeforeValidator(_directions)] = (
        DEFAULT_LEDGER_DIRECTIONS
    )


def _one_of(what: str, allowed: tuple[str, ...]) -> Callable[[object], object]:
    """A validator of one value or a list of them, each one of ``allowed``."""

    def check(value: object) -> object:
        value = _one_or_many(value)
        if isinstance(value, tuple | list):
            for item in value:
                if item not in allowed:
                    raise ValueError(f"unknown {what} {item!r}; expected one of {allowed}")
        return value

    return check


_legal_bases = _one_of("legal basis", (*LEGAL_BASES, NO_LEGAL_BASIS))


#: What ``when.park`` calls a route whose destination is in neither park.
NO_PARK: Final = "none"


_parks = _one_of("park", (*PARKS, NO_PARK))


class When(_Model):
    """A rule's conditions; all that are given must hold (an empty one matches all)."""

    route: Globs | None = None
    direction: Direction | None = None
    sender: Globs | None = None
    team: Globs | None = None
    organisation: Globs | None = None
    legal_basis: Annotated[tuple[str, ...] | None, BeforeValidator(_legal_bases)] = None
    labels: PresenceCondition | None = None
    categories: PresenceCondition | None = None
    subjects: CountThreshold | None = None
    ledger: dict[str, LedgerCondition] | None = None
    content_type: Globs | None = None
    attributes: Annotated[dict[str, AttributeCondition] | None, BeforeValidator(_attributes)] = None
    size: SizeThreshold | None = None
    unscannable: bool | None = None
    park: Annotated[tuple[str, ...] | None, BeforeValidator(_parks)] = None
    gba_registered: bool | None = None


class ThenSpec(_Model):
    """What a rule that does not end the evaluation hands on to the rules after it.

    ``without``: label globs; the later rules judge the transfer as if it held
    none of these labels (none given: as it is).
    """

    without: Globs | None = None


class RuleSpec(_Model):
    """One rule: id, conditions, action and the reason returned to the sender."""

    id: RuleId
    action: Action
    reason: Reason
    when: When = When()
    encrypt: EncryptMode | None = None
    mode: Mode = "enforce"
    #: Evaluation goes on after this rule; the stricter decision wins (docs/policies.md 3.2).
    then: ThenSpec | None = None
    #: A review this rule holds needs this many approvals by distinct officers (four eyes: 2).
    approvals: int | None = Field(default=None, ge=1, le=2)

    @model_validator(mode="after")
    def _encrypt_only_when_passing(self) -> RuleSpec:
        if self.encrypt is not None and self.action == "block":
            raise ValueError("'encrypt' applies to allow and review, not block")
        if self.then is not None and self.action == "block":
            raise ValueError("'then' applies to allow and review: nothing is stricter than block")
        if (self.approvals or 1) > 1 and self.action != "review":
            raise ValueError("'approvals' applies to review rules")
        return self


class DefaultSpec(_Model):
    """What happens when no rule matches (block unless the policy says otherwise)."""

    action: Action = "block"
    reason: Reason
    encrypt: EncryptMode | None = None


class CategoryAdd(_Model):
    """More label globs for a category another file declares (``{add: [globs]}``):
    local additions without editing the shipped packs."""

    add: Globs


class ListFile(_Model):
    """A named list read from a file: one value per line, ``#`` comments allowed.

    The path is relative to the policy file. Officers keep a white list there
    and edit it without touching the packs' rules.
    """

    file: str = Field(min_length=1)


class ChanceSpec(_Model):
    """The column test for numbers that only look like identifiers (docs/policies.md).

    ``count``: labels whose chance-level findings count on every route.
    ``headers``: more header words, per tested label, that name it (a column
    under such a header always counts), beside the built-in English and
    Chinese ones.
    """

    count: Globs | None = None
    headers: dict[str, tuple[Annotated[str, Field(min_length=2, max_length=64)], ...]] = {}


class PolicyFile(_Model):
    """One YAML file of a policy set; every section is optional."""

    name: Name | None = None
    description: str | None = None
    categories: dict[Name, Globs | CategoryAdd] = {}
    detectors: dict[str, DetectorSpec] = {}
    senders: dict[Identity, SenderSpec] = {}
    organisations: dict[Name, OrganisationSpec] = {}
    routes: dict[Name, RouteSpec] = {}
    rules: tuple[RuleSpec, ...] = ()
    default: DefaultSpec | None = None
    ledger: LedgerSpec | None = None
    chance: ChanceSpec | None = None
    #: Named lists of names (routes, senders, teams, organisations), written
    #: out or read from a data file; a condition names one as ``"@NAME"``.
    lists: dict[Name, tuple[Name, ...] | ListFile] = {}


def canonical(model: BaseModel) -> Any:
    """A JSON-ready form of ``model`` (thresholds as strings), for versioning."""
    return model.model_dump(mode="json", exclude_none=True)
