"""What one gateway process shares between its roles: audit log, ledger, metrics, secret.

``gateway serve`` opens one :class:`Services` per configuration and hands it
to the egress and ingress apps, which keep it under a typed ``web.AppKey``.
The HMAC secret for distinct-value hashing is created on first start (32
random bytes, mode 0600) so that ``make run`` needs no manual step.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from gateway.audit.keys import load_or_create_signing_key
from gateway.audit.log import AuditLog
from gateway.audit.note import NoteSigner
from gateway.crypto.keys import read_private_file
from gateway.errors import ConfigError
from gateway.ledger import Ledger, open_ledger
from gateway.ledger.base import LocalOnly, TransferDirectory
from gateway.ledger.postgres import PostgresLedger
from gateway.obs.metrics import Metrics, track_volume
from gateway.server.config import GatewaySettings

#: HMAC-SHA-256 keys should be at least the hash length (RFC 2104 §3): 32 bytes.
SECRET_BYTES = 32


@dataclass(slots=True)
class Services:
    """The long-lived dependencies of one gateway process.

    Attributes:
        settings: the configuration.
        metrics: the app-owned metric registry.
        audit: the transparency log.
        ledger: the yearly export ledger.
        secret: the HMAC key for distinct-value hashing (SPEC §3.2).
        signer: the audit log's checkpoint key (the ingress co-signs with it).
        directory: where the park's replicas share their transfers' states:
            the PostgreSQL ledger when there is one, else nothing to share.
    """

    settings: GatewaySettings
    metrics: Metrics
    audit: AuditLog
    ledger: Ledger
    secret: bytes
    signer: NoteSigner
    directory: TransferDirectory = field(default_factory=LocalOnly)


def load_or_create_secret(path: Path) -> bytes:
    """Read the 32-byte HMAC secret, creating it (mode 0600) on first use.

    Raises:
        ConfigError: the file exists with the wrong size or is unreadable.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        data = os.urandom(SECRET_BYTES)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return load_or_create_secret(path)  # another process won the race
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return data
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the gateway secret: {exc.strerror}") from None
    if len(data) != SECRET_BYTES:
        raise ConfigError(f"{path}: the gateway secret must be exactly {SECRET_BYTES} bytes")
    return data


#: A password file holds one line; anything longer is not one.
MAX_PASSWORD_FILE_BYTES = 4096


def read_password(path: Path | None) -> str | None:
    """The password in ``path`` (its first line), refusing a file others can read.

    Raises:
        ConfigError: unreadable, readable by group or others, too long, or empty.
    """
    if path is None:
        return None
    data = read_private_file(path, max_bytes=MAX_PASSWORD_FILE_BYTES, what="ledger password file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: the ledger password is not UTF-8 text") from None
    password = text.splitlines()[0] if text else ""
    if not password:
        raise ConfigError(f"{path}: the ledger password file is empty")
    return password


@contextlib.asynccontextmanager
async def open_services(
    settings: GatewaySettings, metrics: Metrics | None = None
) -> AsyncIterator[Services]:
    """Open the audit log and the ledger for ``settings``; close them on exit."""
    metrics = metrics if metrics is not None else Metrics()
    track_volume(metrics, "audit", settings.audit.dir)
    if settings.egress is not None:
        track_volume(metrics, "egress_spool", settings.egress.spool_dir)
    if settings.ingress is not None:
        track_volume(metrics, "ingress_spool", settings.ingress.spool_dir)
    secret = load_or_create_secret(settings.secret_file)
    settings.audit.signing_key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = load_or_create_signing_key(settings.audit.signing_key)
    signer = NoteSigner(settings.audit.origin, key)
    audit = await AuditLog.open(
        settings.audit.dir, signer, origin=settings.audit.origin, metrics=metrics
    )
    try:
        ledger = await open_ledger(
            settings.ledger_url, password=read_password(settings.ledger_password_file)
        )
        try:
            directory = ledger if isinstance(ledger, PostgresLedger) else LocalOnly()
            yield Services(settings, metrics, audit, ledger, secret, signer, directory)
        finally:
            await ledger.close()
    finally:
        await audit.close()
