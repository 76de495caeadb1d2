"""Which rules an earlier rule leaves nothing to decide (``policy check``, issue 15).

Rules decide in order: the first enforcing rule without ``then`` whose
conditions hold ends the evaluation. A later rule whose conditions can only
hold when such an earlier rule's also hold never decides anything; it is
*shadowed*. That is almost always an officer's mistake (a specific exception
written after the general rule it was meant to carve out of), so ``policy
check`` names both rules.

:func:`covers` is sound, not complete: it answers True only when it can
prove, condition by condition, that every transfer the later rule matches
on a declared route and from a declared sender is matched by the earlier
rule. Conditions it cannot compare (say, two different globs over content
types) make it answer False, so a rule is never called shadowed wrongly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from gateway.policy.model import (
    AttributeCondition,
    LedgerCondition,
    PresenceCondition,
    Threshold,
    When,
    glob_to_regex,
    is_glob,
)

#: The conditions :func:`covers` compares; any other field of :class:`When`
#: set on the earlier rule makes it answer False (a field added later must be
#: taught here before it can prove anything).
_COMPARED = frozenset(
    {
        "route",
        "direction",
        "legal_basis",
        "park",
        "sender",
        "team",
        "organisation",
        "labels",
        "categories",
        "subjects",
        "ledger",
        "content_type",
        "attributes",
        "size",
        "unscannable",
        "gba_registered",
    }
)


def _glob_implies(narrow: str, broad: str) -> bool:
    """Whether every name ``narrow`` matches is matched by ``broad`` (sound, not complete)."""
    if narrow == broad or broad == "*":
        return True
    if is_glob(narrow):
        return False
    return glob_to_regex(broad).fullmatch(narrow) is not None


def _any_implies(narrow: str, broads: Iterable[str]) -> bool:
    return any(_glob_implies(narrow, broad) for broad in broads)


def _interval(threshold: Threshold) -> tuple[float, float, int | None]:
    """The integers satisfying ``threshold``: ``[lo, hi]``, or all but one (``!=``)."""
    value = threshold.value
    if threshold.op == ">=":
        return value, math.inf, None
    if threshold.op == ">":
        return value + 1, math.inf, None
    if threshold.op == "<=":
        return -math.inf, value, None
    if threshold.op == "<":
        return -math.inf, value - 1, None
    if threshold.op == "==":
        return value, value, None
    return -math.inf, math.inf, value  # "!="


def threshold_implies(narrow: Threshold, broad: Threshold) -> bool:
    """Whether every count satisfying ``narrow`` satisfies ``broad``."""
    n_lo, n_hi, n_hole = _interval(narrow)
    b_lo, b_hi, b_hole = _interval(broad)
    if n_hole is not None:  # all but one value: only an all-but-the-same-value is wider
        return b_hole == n_hole or (b_hole is None and b_lo == -math.inf and b_hi == math.inf)
    if b_hole is not None:
        return not n_lo <= b_hole <= n_hi
    return b_lo <= n_lo and n_hi <= b_hi


def _thresholds_implied(
    narrow: Mapping[str, Threshold] | None, broad: Mapping[str, Threshold] | None
) -> bool:
    """Every threshold the broad side sets is implied by the narrow side's on the same key."""
    for key, threshold in (broad or {}).items():
        mine = (narrow or {}).get(key)
        if mine is None or not threshold_implies(mine, threshold):
            return False
    return True


def _presence_implied(narrow: PresenceCondition | None, broad: PresenceCondition) -> bool:
    """Whenever ``narrow`` holds (or, if None, always), ``broad`` holds."""
    if narrow is None:
        return False
    required = narrow.all or ()
    for name in broad.all or ():
        if not any(_glob_implies(mine, name) for mine in required):
            return False
    if broad.any:
        from_all = any(_any_implies(mine, broad.any) for mine in required)
        from_any = bool(narrow.any) and all(_any_implies(m, broad.any) for m in narrow.any or ())
        if not (from_all or from_any):
            return False
    # What the broad rule excludes, the narrow one must exclude too (or more).
    for name in broad.none or ():
        if not any(_glob_implies(name, mine) for mine in narrow.none or ()):
            return False
    return _thresholds_implied(narrow.count, broad.count) and _thresholds_implied(
        narrow.distinct, broad.distinct
    )


def _ledger_implied(
    narrow: Mapping[str, LedgerCondition] | None, broad: Mapping[str, LedgerCondition]
) -> bool:
    for category, condition in broad.items():
        mine = (narrow or {}).get(category)
        if mine is None:
            return False
        for field in ("current", "projected"):
            wanted: Threshold | None = getattr(condition, field)
            have: Threshold | None = getattr(mine, field)
            if wanted is not None and (have is None or not threshold_implies(have, wanted)):
                return False
    return True


def _attributes_implied(
    narrow: Mapping[str, AttributeCondition] | None, broad: Mapping[str, AttributeCondition]
) -> bool:
    return all((narrow or {}).get(key) == condition for key, condition in broad.items())


def _values_implied(narrow: Sequence[str] | None, broad: Sequence[str]) -> bool:
    """Free-valued globs (content types): each narrow glob lies within a broad one."""
    return narrow is not None and all(_any_implies(glob, broad) for glob in narrow)


def sender_matches(when: When, identity: str, team: str, organisation: str) -> bool:
    """Whether a rule's sender, team and organisation conditions admit a declared sender."""
    for globs, value in (
        (when.sender, identity),
        (when.team, team),
        (when.organisation, organisation),
    ):
        if globs is not None and not any(glob_to_regex(g).fullmatch(value) for g in globs):
            return False
    return True


@dataclass(frozen=True, slots=True)
class Reach:
    """What a rule's route-only and sender conditions admit among the declared ones.

    Attributes:
        when: the rule's conditions.
        routes: declared routes its route, direction, legal basis and park
            conditions admit.
        senders: declared senders its sender, team and organisation
            conditions admit.
    """

    when: When
    routes: frozenset[str]
    senders: frozenset[str]


def covers(broad: Reach, narrow: Reach) -> bool:
    """Whether every transfer ``narrow`` matches is matched by ``broad`` as well.

    A transfer's route and sender are declared ones, so those conditions
    compare as the sets they admit; the others condition by condition.
    """
    b, n = broad.when, narrow.when
    set_fields = {name for name in When.model_fields if getattr(b, name) is not None}
    if not set_fields <= _COMPARED:
        return False
    if not (narrow.routes <= broad.routes and narrow.senders <= broad.senders):
        return False
    if b.labels is not None and not _presence_implied(n.labels, b.labels):
        return False
    if b.categories is not None and not _presence_implied(n.categories, b.categories):
        return False
    for name in ("subjects", "size"):
        wanted: Threshold | None = getattr(b, name)
        have: Threshold | None = getattr(n, name)
        if wanted is not None and (have is None or not threshold_implies(have, wanted)):
            return False
    if b.ledger is not None and not _ledger_implied(n.ledger, b.ledger):
        return False
    if b.content_type is not None and not _values_implied(n.content_type, b.content_type):
        return False
    if b.attributes is not None and not _attributes_implied(n.attributes, b.attributes):
        return False
    return all(
        getattr(n, name) == getattr(b, name)
        for name in ("unscannable", "gba_registered")
        if getattr(b, name) is not None
    )
