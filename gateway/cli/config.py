"""``gateway config check FILE``: what ``nginx -t`` is for nginx (issue 16).

Loads the server configuration as ``gateway serve`` would, then every file
it names, the way the server loads each (certificates and keys into real TLS
contexts, age identities, the audit signing key and the secret with their
permission checks, the twin's verifier key, the policy set), and reports
every problem in one run, each naming the setting and the file. Nothing is
created, written or contacted: a file the server would create on its first
start (the secret, the audit signing key, the spool identity) is noted as
such, and the ledger is not connected to (``--connect`` does that).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.cli import EXIT_FINDING, EXIT_OK
from gateway.errors import GatewayError

#: Files the server makes (mode 0600) on its first start when they are missing.
CREATED_AT_START = ("secret_file", "audit.signing_key", "egress.spool_identity")


@dataclass
class Report:
    """What ``config check`` found: problems fail it, notes do not."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checked: int = 0

    def run(self, setting: str, check: Callable[[], Any]) -> None:
        """Run one check; a :class:`GatewayError` or ``OSError`` is a problem of ``setting``."""
        self.checked += 1
        try:
            check()
        except GatewayError as exc:
            self.problems.append(f"{setting}: {exc.detail}")
        except OSError as exc:
            where = f" {exc.filename}" if exc.filename else ""
            self.problems.append(f"{setting}:{where} {exc.strerror or exc}")
        except ValueError as exc:  # ssl and cryptography loaders say what they refuse
            self.problems.append(f"{setting}: {exc}")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``config check``."""
    parser = subparsers.add_parser("config", help="check a server configuration file")
    sub = parser.add_subparsers(dest="config_command", metavar="COMMAND")
    sub.required = True
    check = sub.add_parser(
        "check",
        help="validate a configuration and every file it names (like nginx -t)",
        description="Load FILE as `gateway serve --config FILE` would, then every "
        "certificate, key, identity, directory and policy it names; print every problem "
        "(exit 1) or 'ok' (exit 0). Nothing is created or written.",
    )
    check.add_argument("file", type=Path, metavar="FILE")
    check.add_argument(
        "--connect", action="store_true", help="also connect to the ledger (ledger_url)"
    )
    check.set_defaults(handler=_check)


def _check(args: argparse.Namespace) -> int:
    from gateway.server.config import load_settings  # pydantic: only for this command

    settings = load_settings(args.file)  # ConfigError: one line naming file and setting
    report = check_settings(settings, connect=args.connect)
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    for problem in report.problems:
        print(f"{args.file}: {problem}", file=sys.stderr)
    if report.problems:
        count = len(report.problems)
        print(f"{args.file}: {count} problem{'s' * (count != 1)}", file=sys.stderr)
        return EXIT_FINDING
    roles = " and ".join(
        role for role in ("egress", "ingress") if getattr(settings, role) is not None
    )
    print(f"{args.file}: ok ({roles or 'no listener'}; {report.checked} checks)")
    return EXIT_OK


def check_settings(settings: Any, *, connect: bool = False) -> Report:
    """Check every file and directory ``settings`` names, as the server would load them."""
    from gateway.audit.keys import load_signing_key, load_verifier
    from gateway.crypto.keys import load_identities, read_private_file
    from gateway.policy import load_policy
    from gateway.server.app import load_spool_identity, server_ssl_context
    from gateway.server.forward import client_ssl_context
    from gateway.server.services import SECRET_BYTES, load_or_create_secret, read_password

    report = Report()

    def created_or(setting: str, path: Path, check: Callable[[], Any]) -> None:
        if path.exists():
            report.run(setting, check)
        else:
            report.run(setting, lambda: _creatable(path.parent))
            report.notes.append(f"{setting}: {path} does not exist; created at first start")

    def secret() -> None:
        # As the server reads it (its size), and as a secret should be kept (0600).
        load_or_create_secret(settings.secret_file)
        read_private_file(settings.secret_file, max_bytes=SECRET_BYTES, what="gateway secret")

    created_or("secret_file", settings.secret_file, secret)
    created_or(
        "audit.signing_key",
        settings.audit.signing_key,
        lambda: load_signing_key(settings.audit.signing_key),
    )
    report.run("audit.dir", lambda: _writable_dir(settings.audit.dir))
    report.run("witness_dir", lambda: _writable_dir(settings.witness_dir))
    egress, ingress = settings.egress, settings.ingress
    if egress is not None:
        if egress.tls is not None:
            report.run("egress.tls", lambda: server_ssl_context(egress.tls, require_client=False))
        report.run("egress.upstream_tls", lambda: client_ssl_context(egress.upstream_tls))
        report.run("egress.spool_dir", lambda: _writable_dir(egress.spool_dir))
        created_or(
            "egress.spool_identity",
            egress.spool_identity,
            lambda: load_spool_identity(egress.spool_identity),  # exists: nothing is created
        )
        report.run("egress.policy_dir", lambda: _policy(load_policy, egress.policy_dir))
        if egress.held_dir is not None:
            report.run("egress.held_dir", lambda: _writable_dir(egress.held_dir))
        if egress.intercept is not None:
            report.run("egress.intercept", lambda: _intercept(egress.intercept))
    if ingress is not None:
        report.run("ingress.tls", lambda: server_ssl_context(ingress.tls, require_client=True))
        report.run("ingress.identity", lambda: load_identities(ingress.identity))
        report.run("ingress.spool_dir", lambda: _writable_dir(ingress.spool_dir))
        if ingress.payload_dir is not None:
            report.run("ingress.payload_dir", lambda: _writable_dir(ingress.payloads))
        if ingress.destination_tls is not None:
            report.run(
                "ingress.destination_tls", lambda: client_ssl_context(ingress.destination_tls)
            )
        for route, url in sorted(ingress.deliver.items()):
            if url.startswith("file://"):
                report.run(f"ingress.deliver.{route}", functools.partial(_inbox, url))
        if ingress.witness is not None:
            report.run("ingress.witness.log_key", lambda: load_verifier(ingress.witness.log_key))
    if settings.ledger_password_file is not None:
        report.run("ledger_password_file", lambda: read_password(settings.ledger_password_file))
    if connect:
        password = None
        with contextlib.suppress(GatewayError):
            password = read_password(settings.ledger_password_file)
        report.run("ledger_url", lambda: asyncio.run(_ping_ledger(settings.ledger_url, password)))
    return report


def _intercept(config: Any) -> None:
    """The interception CA loads as at start (key mode, a CA holding the key, one leaf minted)."""
    from gateway.crypto.intercept import InterceptionCA

    InterceptionCA.load(config.cert, config.key, max_hosts=config.max_hosts)


def _creatable(directory: Path) -> None:
    """The nearest existing ancestor of ``directory`` must let this user create in it."""
    existing = directory
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise GatewayError(f"{existing}: not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise GatewayError(f"{existing}: not writable by this user")


def _writable_dir(directory: Path) -> None:
    if directory.exists():
        if not directory.is_dir():
            raise GatewayError(f"{directory}: not a directory")
        if not os.access(directory, os.W_OK | os.X_OK):
            raise GatewayError(f"{directory}: not writable by this user")
        return
    _creatable(directory.parent)


def _inbox(url: str) -> None:
    from gateway.server.inbox import inbox_path

    _writable_dir(inbox_path(url))


def _policy(load: Callable[..., Any], directory: Path) -> None:
    from gateway.policy import PolicyLoadError

    try:
        load(directory)
    except PolicyLoadError as exc:
        errors = [str(e) for e in exc.errors if not e.warning]
        raise GatewayError(
            f"{len(errors)} error(s): " + "; ".join(errors[:5]) + (" …" if len(errors) > 5 else "")
        ) from None


async def _ping_ledger(url: str, password: str | None) -> None:
    from gateway.ledger import open_ledger

    ledger = await open_ledger(url, create=False, password=password)
    try:
        await ledger.ping()
    finally:
        await ledger.close()
