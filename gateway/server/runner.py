"""Start and stop a gateway: listeners, signals, graceful drain.

:func:`running` is what ``gateway serve``, ``gateway demo``, the tests and the
benchmark use: it opens the shared services, starts the egress and/or ingress
listeners, yields their URLs, and on exit drains in-flight transfers up to
:data:`~gateway.server.config.SHUTDOWN_DRAIN_SECONDS` (new ones get 503), then
cancels what is left, so every transfer ends ``aborted``/``failed`` in the
audit log rather than half-delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib.util
import signal
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from gateway.classify.matcher import NATIVE_AVAILABLE
from gateway.crypto.certs import describe_certificate, load_certificates
from gateway.crypto.keys import load_identities
from gateway.errors import ConfigError
from gateway.obs.metrics import Metrics
from gateway.server import ingress
from gateway.server.app import (
    make_egress_app,
    make_ingress_app,
    reload_policy,
    server_ssl_context,
)
from gateway.server.config import (
    SHUTDOWN_DRAIN_SECONDS,
    GatewaySettings,
    ListenerLimits,
    TlsListener,
)
from gateway.server.connections import (
    AcceptErrorLog,
    GatedSite,
    GatewayServer,
    descriptor_budget,
    make_limiter,
    raise_nofile_limit,
)
from gateway.server.egress_state import EGRESS
from gateway.server.forward import client_ssl_context
from gateway.server.services import Services, open_services
from gateway.server.witness import offer_checkpoint

log = structlog.get_logger("gateway.server")

#: Heaps (arenas) glibc's malloc may give the gateway's threads. By default
#: each thread that allocates gets its own, up to eight per core: a reader
#: process's text frames (1 MiB, taken on the scanning thread) and the spool
#: reads it asks for (on the read server's thread) then fragmented several, and
#: a 2 GB Parquet transfer grew the egress from 105 to 220-390 MB of RSS; with
#: two, 131-204 MB, as fast (the GIL serialises most allocations anyway). The
#: rest was the report pipe's reads (isolation._parent: now one reused buffer):
#: 111-114 MB with both, after a 1 GB transfer.
MALLOC_ARENAS = 2
#: mallopt(3)'s parameter number for the arena limit (glibc's malloc.h).
_M_ARENA_MAX = -8


def limit_malloc_arenas(count: int = MALLOC_ARENAS) -> int | None:
    """Cap glibc's malloc arenas for the threads started from now on.

    Returns ``count``, or None where the C library has no such setting (not
    glibc): the gateway runs the same, its heap less tight.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return count if mallopt(_M_ARENA_MAX, count) == 1 else None


def record_cert_expiry(services: Services) -> None:
    """Point ``gateway_tls_cert_expiry_seconds`` at every configured certificate.

    Called at start and on SIGHUP, when the certificates are (re)loaded. The
    gauge is computed at each scrape from the loaded certificate's notAfter,
    so it counts down on a long-running process and the expiry alert fires
    without a reload; a file renewed on disk but not yet loaded (no SIGHUP)
    is not what the listener presents, so it is not what the gauge shows.
    """
    settings = services.settings
    certs: dict[str, Path] = {}
    if settings.egress is not None:
        if settings.egress.tls is not None:
            certs["egress-server"] = settings.egress.tls.cert
        if settings.egress.upstream_tls is not None:
            certs["egress-client"] = settings.egress.upstream_tls.cert
    if settings.ingress is not None:
        certs["ingress-server"] = settings.ingress.tls.cert
        if settings.ingress.destination_tls is not None:
            certs["ingress-client"] = settings.ingress.destination_tls.cert
    for name, path in certs.items():
        try:
            info = describe_certificate(load_certificates(path)[0])
        except ConfigError as exc:
            log.error("certificate_unreadable", cert=name, error=exc.detail)
            continue
        services.metrics.tls_cert_expiry.labels(name).set_function(info.seconds_to_expiry)


def warn_unpinned(settings: GatewaySettings) -> None:
    """Log ``upstream_unpinned`` for a client TLS section without ``pin_spki``.

    Without a pin, any certificate the configured CA issues with the right
    name is taken for the twin or the destination (issue 11, finding 8); the
    pin is optional only because ``https://`` destinations of other parties
    may rotate keys without notice.
    """
    sections = {
        "egress.upstream_tls": settings.egress.upstream_tls if settings.egress else None,
        "ingress.destination_tls": settings.ingress.destination_tls if settings.ingress else None,
    }
    for where, tls in sections.items():
        if tls is not None and not tls.pin_spki:
            log.warning(
                "upstream_unpinned",
                setting=where,
                detail="no pin_spki: a mis-issued certificate with the right name is accepted",
            )


@dataclass(slots=True)
class RunningGateway:
    """A started gateway.

    Attributes:
        services: audit log, ledger, metrics, secret.
        egress_url: base URL of the egress listener (None without that role).
        ingress_url: base URL of the ingress listener (None without that role).
        egress_app: the egress application, if running.
        ingress_app: the ingress application, if running.
    """

    services: Services
    egress_url: str | None = None
    ingress_url: str | None = None
    egress_app: web.Application | None = None
    ingress_app: web.Application | None = None
    runners: list[web.AppRunner] = field(default_factory=list)
    server_contexts: list[tuple[ssl.SSLContext, TlsListener]] = field(default_factory=list)

    def reload_tls(self) -> None:
        """Re-read certificates, TLS keys and age identities (SIGHUP).

        Server contexts load the new chain in place (aiohttp keeps the context
        object); client contexts for the twin and destinations are rebuilt.
        The expiry gauge is refreshed for every configured certificate.

        Raises:
            ConfigError: a certificate or key does not load (the old ones stay).
        """
        for context, tls in self.server_contexts:
            context.load_cert_chain(str(tls.cert), str(tls.key))
        if self.egress_app is not None:
            state = self.egress_app[EGRESS]
            state.upstream_ssl = client_ssl_context(state.config.upstream_tls)
        if self.ingress_app is not None:
            istate = self.ingress_app[ingress.INGRESS]
            istate.destination_ssl = client_ssl_context(istate.config.destination_tls)
            # A rotated age identity: new envelopes are opened with the new key file
            # (which may list the old identity too, for envelopes still in flight).
            istate.identities = load_identities(istate.config.identity)
        record_cert_expiry(self.services)

    async def witness_now(self) -> str | None:
        """Sign a checkpoint and offer it to the twin now; the co-signed note or None."""
        if self.egress_app is None:
            return None
        state = self.egress_app[EGRESS]
        url = state.config.witness_url
        if url is None or state.session is None:
            return None
        await self.services.audit.sync_checkpoint()
        return await offer_checkpoint(
            state.session,
            url,
            self.services.audit,
            self.services.settings.witness_dir,
            state.upstream_ssl,
        )

    async def reload_policy(self) -> None:
        """Reload the egress policy (what SIGHUP does)."""
        if self.egress_app is not None:
            await reload_policy(self.egress_app)

    def _states(self) -> list[Any]:
        states: list[Any] = []
        if self.egress_app is not None:
            states.append(self.egress_app[EGRESS])
        if self.ingress_app is not None:
            states.append(self.ingress_app[ingress.INGRESS])
        return states

    async def drain(self, deadline: float = SHUTDOWN_DRAIN_SECONDS) -> int:
        """Refuse new transfers, wait for in-flight ones, cancel the rest; return cancelled."""
        states = self._states()
        for state in states:
            state.closing = True
        tasks: set[asyncio.Future[Any]] = set()
        for state in states:
            tasks.update(state.tasks)
            tasks.update(getattr(state, "background", ()))
        if not tasks:
            return 0
        log.info("draining", inflight=len(tasks), deadline=deadline)
        _, pending = await asyncio.wait(tasks, timeout=deadline)
        for state in states:
            state.cut = True  # the cancelled transfers answer 503, not a reset
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)
        return len(pending)


async def _start(
    app: web.Application,
    listener: str,
    host: str,
    port: int,
    ssl_context: ssl.SSLContext | None,
    limits: ListenerLimits,
    metrics: Metrics,
    budget: int,
) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    # The gateway's connection handling (gateway/server/connections.py): caps,
    # request-head deadline, problem+json for what the parser refuses; swapped
    # before the site starts, so every connection uses it.
    assert runner.server is not None
    runner.server.__class__ = GatewayServer
    server = runner.server
    assert isinstance(server, GatewayServer)
    server.configure(listener, limits, metrics)
    limiter = make_limiter(listener, limits, metrics, budget)
    site = GatedSite(runner, host, port, ssl_context=ssl_context, limiter=limiter)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    bound = runner.addresses[0]
    scheme = "https" if ssl_context is not None else "http"
    shown = f"[{bound[0]}]" if ":" in str(bound[0]) else str(bound[0])
    return runner, f"{scheme}://{shown}:{bound[1]}"


@contextlib.asynccontextmanager
async def running(
    settings: GatewaySettings,
    *,
    metrics: Metrics | None = None,
    drain_seconds: float = SHUTDOWN_DRAIN_SECONDS,
) -> AsyncIterator[RunningGateway]:
    """Run the roles ``settings`` configures until the block exits."""
    async with open_services(settings, metrics) as services:
        gateway = RunningGateway(services)
        listeners = (settings.egress is not None) + (settings.ingress is not None)
        budget = descriptor_budget(raise_nofile_limit(), listeners)
        loop = asyncio.get_running_loop()
        previous_handler = loop.get_exception_handler()
        loop.set_exception_handler(AcceptErrorLog(services.metrics, previous_handler))
        try:
            if settings.egress is not None:
                config = settings.egress
                app = make_egress_app(services, config)
                context = (
                    server_ssl_context(config.tls, require_client=False) if config.tls else None
                )
                if context is not None and config.tls is not None:
                    gateway.server_contexts.append((context, config.tls))
                runner, url = await _start(
                    app,
                    "egress",
                    config.host,
                    config.port,
                    context,
                    config.limits,
                    services.metrics,
                    budget,
                )
                gateway.runners.append(runner)
                gateway.egress_app, gateway.egress_url = app, url
            if settings.ingress is not None:
                iconfig = settings.ingress
                app = make_ingress_app(services, iconfig)
                context = server_ssl_context(iconfig.tls, require_client=True)
                gateway.server_contexts.append((context, iconfig.tls))
                runner, url = await _start(
                    app,
                    "ingress",
                    iconfig.host,
                    iconfig.port,
                    context,
                    iconfig.limits,
                    services.metrics,
                    budget,
                )
                gateway.runners.append(runner)
                gateway.ingress_app, gateway.ingress_url = app, url
            record_cert_expiry(services)
            warn_unpinned(settings)
            yield gateway
        finally:
            with contextlib.suppress(Exception):
                await gateway.drain(drain_seconds)
            for runner in reversed(gateway.runners):
                await runner.cleanup()
            loop.set_exception_handler(previous_handler)


async def serve_forever(settings_list: list[GatewaySettings], *, announce: Any = None) -> None:
    """Run one or more gateways until SIGINT/SIGTERM; SIGHUP reloads policies.

    Args:
        settings_list: one configuration per gateway (``gateway demo`` runs two).
        announce: called with the list of :class:`RunningGateway` once listening.
    """
    arenas = limit_malloc_arenas()  # before the gateways start their threads
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    async with contextlib.AsyncExitStack() as stack:
        gateways = [
            await stack.enter_async_context(running(s, drain_seconds=s.drain_seconds))
            for s in settings_list
        ]

        def on_hup() -> None:
            for gw in gateways:
                try:
                    gw.reload_tls()
                except ConfigError as exc:
                    log.error("tls_reload_failed", error=exc.detail)
                task = loop.create_task(gw.reload_policy())
                task.add_done_callback(lambda t: t.cancelled() or t.exception())

        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        loop.add_signal_handler(signal.SIGHUP, on_hup)
        core = "native" if NATIVE_AVAILABLE else "python"
        if not NATIVE_AVAILABLE:
            # Same verdicts, about 4x slower on identifier-dense data (docs/architecture.md).
            log.warning(
                "classifier_core_missing",
                detail="gateway.classify._native is not built; the Python matcher runs "
                "(same verdicts, about 4x slower on identifier-dense data)",
                fix="install a C compiler, the Python headers and OpenSSL's headers "
                "(Debian: gcc python3-dev libssl-dev), then reinstall: "
                "pip install --force-reinstall --no-deps .",
            )
        if importlib.util.find_spec("gateway.classify.formats.tables._rows") is None:
            # Same text, about three times the CPU per table batch (docs/formats.md).
            log.warning(
                "table_renderer_missing",
                detail="gateway.classify.formats.tables._rows is not built; Arrow's kernels "
                "render tables (same text, slower)",
                fix="install a C compiler and the Python headers (Debian: gcc python3-dev), "
                "then reinstall: pip install --force-reinstall --no-deps .",
            )
        for gw in gateways:
            log.info(
                "listening",
                egress=gw.egress_url,
                ingress=gw.ingress_url,
                classifier_core=core,
                malloc_arenas=arenas,
            )
        if announce is not None:
            announce(gateways)
        try:
            await stop.wait()
        finally:
            log.info("shutting_down")
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                loop.remove_signal_handler(signum)
