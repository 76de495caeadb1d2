"""Research-format readers, found through a registry keyed by the sniffed type (issue 12).

Each family module (``tables``, ``arrays``, ``documents``, ``medical``,
``genomics``, ``media``, ``models``) calls :func:`register` once per format at
import; :func:`identify` is what the decoder's sniffer asks about a member's
first bytes. Adding a format is one module plus its tests. The contract
between the decoder and a reader is :mod:`gateway.classify.formats.base`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from gateway.classify.formats.base import Extract, RandomReader, Scout, StreamReader

#: Bytes of a member the sniffers see (the decoder's sniff buffer): enough
#: for every magic number and for the headers that tell formats apart.
SNIFF_PREFIX_BYTES = 64 << 10

T = TypeVar("T")


class Magic:
    """A sniffer that recognises a prefix holding one of ``magics`` at ``offset``.

    Unlike an opaque sniffer, it says which first bytes it can accept
    (:attr:`leads`), so :func:`identify` asks it only about prefixes that
    start with one of them.
    """

    __slots__ = ("leads", "magics", "offset")

    def __init__(self, *magics: bytes, offset: int = 0) -> None:
        if not magics:
            raise ValueError("a magic sniffer needs at least one magic")
        self.magics = magics
        self.offset = offset
        #: The first bytes of every prefix it recognises, or None (any byte).
        self.leads: bytes | None = (
            bytes(sorted({m[0] for m in magics})) if offset == 0 and all(magics) else None
        )

    def __call__(self, prefix: bytes) -> bool:
        return any(prefix.startswith(magic, self.offset) for magic in self.magics)

    def __repr__(self) -> str:
        return f"Magic({', '.join(map(repr, self.magics))}, offset={self.offset})"


@dataclass(frozen=True, slots=True)
class Format:
    """One format a reader understands.

    Attributes:
        name: short name, used in unscannable reasons and layer lists
            (``parquet``, ``dicom``).
        media_type: what ``ContentInfo.type`` reports
            (``application/vnd.apache.parquet``).
        sniff: True when a member's first bytes (up to
            :data:`SNIFF_PREFIX_BYTES`, all of them when shorter) are this format.
        stream: a streaming reader for a member, or None.
        random: a random-access reader, or None (exactly one of the two is set).
        scout: for a random-access format, what makes a
            :class:`~gateway.classify.formats.base.Scout` for one member: fed
            its bytes as they arrive, its notes go to ``random`` with the view
            (None: the reader reads everything after the member has ended).
        priority: larger wins when several sniffers match (a DICOM file whose
            preamble looks like a TIFF).
        names_container: a member of this format names the archive it is in
            (a ``.docx``'s ``word/document.xml``, an ``.odt``'s
            ``content.xml``): ``ContentInfo.type`` is then its media type, not
            that of the archive's largest member (a theme or a style sheet).
        leads: every prefix ``sniff`` recognises starts with one of these
            bytes (its magic's first): :func:`identify` does not ask it about
            any other. None (the default): it may recognise any first byte.
            A :class:`Magic` sniffer's are taken from its magics. A wrong one
            hides the format: give it only for a sniffer whose first test is
            a fixed magic at offset 0.
    """

    name: str
    media_type: str
    sniff: Callable[[bytes], bool]
    stream: Callable[[Extract], StreamReader] | None = None
    random: RandomReader | None = None
    scout: Callable[[], Scout] | None = None
    priority: int = 0
    names_container: bool = False
    leads: bytes | None = None

    def __post_init__(self) -> None:
        if isinstance(self.sniff, Magic):
            if self.leads is None:
                object.__setattr__(self, "leads", self.sniff.leads)
            elif self.sniff.leads is None or not set(self.sniff.leads) <= set(self.leads):
                raise ValueError(f"format {self.name}: leads must hold its magics' first bytes")
        if self.leads is not None and not self.leads:
            raise ValueError(f"format {self.name}: leads must name at least one byte")
        if (self.stream is None) == (self.random is None):
            raise ValueError(f"format {self.name}: give exactly one of stream or random")
        if self.scout is not None and self.random is None:
            raise ValueError(f"format {self.name}: a scout is for a random-access reader")


_REGISTRY: dict[str, Format] = {}
#: The registry in sniffing order, rebuilt when it changes (identify runs at
#: every stream start: no sort on that path).
_ORDERED: list[tuple[Format, ...] | None] = [None]
#: By a prefix's first byte (256: the empty prefix), the formats in sniffing
#: order whose sniffer can recognise it: a format with ``leads`` only under
#: those bytes, every other one under all. Rebuilt with :data:`_ORDERED`; an
#: archive of many small members sniffs each one.
_BY_LEAD: list[tuple[tuple[Format, ...], ...] | None] = [None]


#: Bumped by every change; an order built from an older registry is not kept.
_GENERATION: list[int] = [0]
#: Guards the generation and the two caches (never held across an import).
_CACHE_LOCK = threading.Lock()


def changed() -> None:
    """Forget the orders derived from the registry (it changed)."""
    with _CACHE_LOCK:
        _GENERATION[0] += 1
        _ORDERED[0] = _BY_LEAD[0] = None


def _keep(slot: list[T | None], value: T, generation: int) -> T:
    """Cache ``value`` in ``slot`` unless the registry changed since ``generation``."""
    with _CACHE_LOCK:
        if _GENERATION[0] == generation:
            slot[0] = value
    return value


def register(fmt: Format) -> Format:
    """Add ``fmt`` to the registry (once per name)."""
    if fmt.name in _REGISTRY:
        raise ValueError(f"format {fmt.name!r} is registered twice")
    _REGISTRY[fmt.name] = fmt
    changed()
    return fmt


def unregister(name: str) -> Format:
    """Remove the format registered as ``name`` (tests that register stand-ins).

    Raises:
        KeyError: no format of that name is registered.
    """
    fmt = _REGISTRY.pop(name)
    changed()
    return fmt


def formats() -> tuple[Format, ...]:
    """Every registered format, highest priority first (then in order of registration)."""
    _load_families()
    ordered = _ORDERED[0]
    if ordered is None:
        generation = _GENERATION[0]
        ordered = tuple(sorted(_REGISTRY.values(), key=lambda f: -f.priority))
        _keep(_ORDERED, ordered, generation)
    return ordered


def identify(prefix: bytes) -> Format | None:
    """The registered format whose sniffer recognises ``prefix``, if any.

    A sniffer that raises (a bug: sniffers get hostile bytes) counts as not
    recognising the prefix; the member is then decided without it.
    """
    by_lead = _BY_LEAD[0]
    if by_lead is None:
        generation = _GENERATION[0]
        by_lead = _keep(_BY_LEAD, _by_lead(formats()), generation)
    for fmt in by_lead[prefix[0] if prefix else 256]:
        try:
            recognised = fmt.sniff(prefix)
        except Exception:  # noqa: BLE001, S112 - a sniffer's bug must not fail the scan
            continue
        if recognised:
            return fmt
    return None


def _by_lead(ordered: tuple[Format, ...]) -> tuple[tuple[Format, ...], ...]:
    """:data:`_BY_LEAD` for the formats in ``ordered`` (sniffing order kept)."""

    def may_start(fmt: Format, lead: int) -> bool:
        return fmt.leads is None or (lead < 256 and lead in fmt.leads)

    return tuple(tuple(f for f in ordered if may_start(f, lead)) for lead in range(257))


_FAMILIES = (
    "tables",
    "arrays",
    "documents",
    "medical",
    "genomics",
    "media",
    "models",
)
_loaded = False


def _load_families() -> None:
    """Import every family module present (each registers its formats)."""
    global _loaded
    if _loaded:
        return
    import importlib

    for family in _FAMILIES:
        try:
            importlib.import_module(f"{__name__}.{family}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{family}":
                raise
    _loaded = True
