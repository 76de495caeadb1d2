"""Declarative policies: model, loader, compiled evaluation, hot reload (SPEC §4).

The API the server and the CLI use:

====================================  =================================================
name                                  what it is for
====================================  =================================================
``load_policy(path, *,                load, validate, compile a policy directory; raises
require_keys=True)``                  ``PolicyLoadError`` (``.errors``: ``PolicyIssue``
                                      list, ``str()`` is ``file:line:col: message``) or
                                      ``PolicyIOError`` (path unreadable)
``CompiledPolicy.version``, ``.name``  SHA-256 of the canonical content; the set's name
``CompiledPolicy.routes[name]``       ``Route(name, direction, destination, recipient,
                                      legal_basis, encrypt)``
``CompiledPolicy.senders[identity]``  ``Sender(id, team, organisation)``
``CompiledPolicy.detectors``          the ``DetectorSet`` to build a ``Scanner`` with
``CompiledPolicy.context(route,       ``TransferContext``; ``NotFound`` (404) unknown
sender)``                             route, ``Unauthenticated`` (401) unknown sender
``CompiledPolicy.ledger_categories``  ledger categories this policy declares
                                      (``personal``, ``sensitive``)
``CompiledPolicy.ledger_directions``  directions the ledger counts (default ``sz->hk``)
``CompiledPolicy.ledger_digests(      ``{category: frozenset[bytes]}`` for the ledger's
summary, direction=None)``            ``count()`` and ``add()``; empty sets for a
                                      direction the ledger does not count
``CompiledPolicy.evaluate(ctx,        pure; ``Decision(action, rule, reason, encrypt,
summary, ledger_counts)``             policy_version, trace, shadow_matches)``
``PolicyHolder(path, metrics=,        ``current()``; ``reload() -> ReloadResult`` keeps
listeners=)``                         the old version when the new one is invalid
``PolicyWatcher(path, extra)``        ``changed() -> bool`` by content fingerprint; the
                                      server polls it, then calls ``reload()``
``run_cases(path) -> CaseReport``     ``gateway policy test`` (``*_test.yaml`` files)
====================================  =================================================

No I/O happens during evaluation; the loader and the holder read files only
when asked to (re)load. Nothing here imports asyncio or aiohttp (ruff TID251).
"""

from __future__ import annotations

from gateway.policy.cases import CaseReport, CaseResult, run_cases
from gateway.policy.engine import (
    DEFAULT_RULE,
    LEDGER_CATEGORIES,
    CompiledPolicy,
    ConditionResult,
    Decision,
    Route,
    RuleTrace,
    Sender,
    TransferContext,
)
from gateway.policy.holder import PolicyHolder, PolicyWatcher, ReloadResult
from gateway.policy.loader import PolicyIOError, load_policy
from gateway.policy.source import PolicyIssue, PolicyLoadError, Position

__all__ = [
    "DEFAULT_RULE",
    "LEDGER_CATEGORIES",
    "CaseReport",
    "CaseResult",
    "CompiledPolicy",
    "ConditionResult",
    "Decision",
    "PolicyHolder",
    "PolicyIOError",
    "PolicyIssue",
    "PolicyLoadError",
    "PolicyWatcher",
    "Position",
    "ReloadResult",
    "Route",
    "RuleTrace",
    "Sender",
    "TransferContext",
    "load_policy",
    "run_cases",
]
