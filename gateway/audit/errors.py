"""Errors of the audit log, mapped to HTTP once like every other gateway error."""

from __future__ import annotations

from gateway.errors import Unavailable


class AuditUnavailable(Unavailable):
    """The audit log cannot make records durable, so the gateway fails closed (503).

    Raised by :meth:`~gateway.audit.log.AuditLog.append` after a write or
    fsync failure (the log stays unhealthy until it has reopened its files by
    itself: after a failed fsync the page cache state is unknown, so retrying
    the write is unsafe), after
    :meth:`~gateway.audit.log.AuditLog.close`, and when the directory cannot be
    opened for writing.
    """

    slug = "audit-unavailable"
    title = "Audit log unavailable"


class AuditIntegrityError(AuditUnavailable):
    """The log on disk contradicts itself beyond a torn final write.

    For example a record covered by a signed checkpoint is unreadable, or a
    segment file is missing. The gateway refuses to append to such a log;
    ``gateway audit verify`` reports the first bad index.
    """

    slug = "audit-integrity"
    title = "Audit log integrity failure"
