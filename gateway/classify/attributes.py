"""Content attributes: the facts readers report for policies, and their vocabularies.

``ContentInfo.attributes`` holds what format readers state about the content
(``organism: Homo sapiens``, ``assembly: GRCh38``), each value from a fixed
vocabulary, several values of one key joined by
:data:`~gateway.classify.decode.ATTRIBUTE_SEPARATOR`. This module is what the
policy side needs to know about them: which keys exist, which values each may
take (so that a typo in a policy is an error, not a condition that never
holds), and how to read one key's values back.

An attribute no reader reported reads as :data:`UNKNOWN`, the same word the
genomic readers report for data whose header names no organism: to a policy,
"the file does not say" is one value whatever the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from gateway.classify.decode import ATTRIBUTE_SEPARATOR
from gateway.classify.formats.genomics.organism import (
    ASSEMBLIES,
    ORGANISMS,
    UNKNOWN_ORGANISM,
)

#: The value of an attribute the content does not state.
UNKNOWN: Final = UNKNOWN_ORGANISM
ORGANISM: Final = "organism"
ASSEMBLY: Final = "assembly"

#: Every attribute key a reader may report and every value it may take
#: (:data:`UNKNOWN` included: it is what an absent attribute reads as).
VOCABULARY: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {
        ORGANISM: ORGANISMS | {UNKNOWN},
        ASSEMBLY: ASSEMBLIES | {UNKNOWN},
    }
)


def attribute_values(attributes: Mapping[str, str], key: str) -> tuple[str, ...]:
    """The values of ``key`` in ``ContentInfo.attributes``; ``(UNKNOWN,)`` when absent."""
    joined = attributes.get(key)
    if not joined:
        return (UNKNOWN,)
    return tuple(joined.split(ATTRIBUTE_SEPARATOR))
