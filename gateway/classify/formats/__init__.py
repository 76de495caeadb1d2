"""Research-format readers, found through a registry keyed by the sniffed type (issue 12).

Each family module (``tables``, ``arrays``, ``documents``, ``medical``,
``genomics``, ``media``, ``models``) calls :func:`register` once per format at
import; :func:`identify` is what the decoder's sniffer asks about a member's
first bytes. Adding a format is one module plus its tests. The contract
between the decoder and a reader is :mod:`gateway.classify.formats.base`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gateway.classify.formats.base import Extract, RandomReader, Scout, StreamReader

#: Bytes of a member the sniffers see (the decoder's sniff buffer): enough
#: for every magic number and for the headers that tell formats apart.
SNIFF_PREFIX_BYTES = 64 << 10


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
    """

    name: str
    media_type: str
    sniff: Callable[[bytes], bool]
    stream: Callable[[Extract], StreamReader] | None = None
    random: RandomReader | None = None
    scout: Callable[[], Scout] | None = None
    priority: int = 0
    names_container: bool = False

    def __post_init__(self) -> None:
        if (self.stream is None) == (self.random is None):
            raise ValueError(f"format {self.name}: give exactly one of stream or random")
        if self.scout is not None and self.random is None:
            raise ValueError(f"format {self.name}: a scout is for a random-access reader")


_REGISTRY: dict[str, Format] = {}
#: The registry in sniffing order, rebuilt when it changes (identify runs at
#: every stream start: no sort on that path).
_ORDERED: list[tuple[Format, ...] | None] = [None]


def register(fmt: Format) -> Format:
    """Add ``fmt`` to the registry (once per name)."""
    if fmt.name in _REGISTRY:
        raise ValueError(f"format {fmt.name!r} is registered twice")
    _REGISTRY[fmt.name] = fmt
    _ORDERED[0] = None
    return fmt


def unregister(name: str) -> Format:
    """Remove the format registered as ``name`` (tests that register stand-ins).

    Raises:
        KeyError: no format of that name is registered.
    """
    fmt = _REGISTRY.pop(name)
    _ORDERED[0] = None
    return fmt


def formats() -> tuple[Format, ...]:
    """Every registered format, highest priority first (then in order of registration)."""
    _load_families()
    ordered = _ORDERED[0]
    if ordered is None:
        ordered = _ORDERED[0] = tuple(sorted(_REGISTRY.values(), key=lambda f: -f.priority))
    return ordered


def identify(prefix: bytes) -> Format | None:
    """The registered format whose sniffer recognises ``prefix``, if any.

    A sniffer that raises (a bug: sniffers get hostile bytes) counts as not
    recognising the prefix; the member is then decided without it.
    """
    for fmt in formats():
        try:
            recognised = fmt.sniff(prefix)
        except Exception:  # noqa: BLE001, S112 - a sniffer's bug must not fail the scan
            continue
        if recognised:
            return fmt
    return None


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
