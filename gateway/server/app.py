"""The aiohttp applications of the two roles: routes, middleware, lifetimes.

``make_egress_app(services)`` and ``make_ingress_app(services)`` put their
state under typed ``web.AppKey``s (STYLE.md §7) and open and close their
resources in ``cleanup_ctx``: the HTTP client session, the policy watcher task,
the spool sweep and the restore of held reviews. The audit log and the ledger
belong to :class:`~gateway.server.services.Services`, shared by both roles of
one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import structlog
from aiohttp import web

from gateway.audit.keys import load_verifier
from gateway.audit.records import PolicyEvent, policy_record
from gateway.classify.budget import DecoderBudget
from gateway.crypto.intercept import InterceptionCA
from gateway.crypto.keys import (
    X25519Identity,
    identity_file_text,
    load_identities,
    write_private_file,
)
from gateway.crypto.tls import server_ssl_context as tls_server_context
from gateway.errors import ConfigError
from gateway.ledger import LedgerUnavailable, ledger_year
from gateway.policy.archive import archive_dir, archive_policy
from gateway.policy.engine import CompiledPolicy
from gateway.policy.holder import PolicyHolder, PolicyWatcher, ReloadResult
from gateway.server import (
    egress,
    inbox,
    ingress,
    proxy_routes,
    records,
    review_expiry,
    review_queue,
    review_restore,
    reviews,
    status,
    tunnel,
    witness,
)
from gateway.server.access import access_middleware
from gateway.server.auth import TokenTable, require_metrics_reader
from gateway.server.config import (
    MAX_HEADER_FIELD_BYTES,
    POLICY_POLL_SECONDS,
    EgressConfig,
    IngressConfig,
    TlsListener,
)
from gateway.server.connections import (
    content_coding_middleware,
    expectation_middleware,
    framing_middleware,
)
from gateway.server.egress_state import EGRESS, EgressState
from gateway.server.forward import client_ssl_context
from gateway.server.problem import Handler, json_response, problem_middleware
from gateway.server.services import Services
from gateway.server.spool import SpoolDir

log = structlog.get_logger("gateway.server")

#: aiohttp buffers at most this much of a request body before the handler
#: reads it; bodies are streamed, so this only caps pre-read buffering.
CLIENT_MAX_SIZE = 1024**2
#: aiohttp's per-connection read buffer (its ``read_bufsize``; it stops reading
#: the socket at twice this). aiohttp's 64 KiB default pauses and resumes the
#: socket every 128 KiB of a large body, an epoll update each time; 256 KiB
#: makes that 4x rarer and bounds a connection's buffered body at 512 KiB.
READ_BUFFER_BYTES = 256 * 1024
#: aiohttp's connection-handler arguments for both roles. ``auto_decompress`` is
#: off: request bodies are decoded by the classifier only, under its limits
#: (coded bodies are refused, see ``content_coding_middleware``).
HANDLER_ARGS = {
    "max_field_size": MAX_HEADER_FIELD_BYTES,
    "read_bufsize": READ_BUFFER_BYTES,
    "auto_decompress": False,
}

POLICY = web.AppKey("policy", PolicyHolder)
SERVICES = web.AppKey("services", Services)


def server_ssl_context(tls: TlsListener, *, require_client: bool) -> ssl.SSLContext:
    """A TLS server context for a listener; client certificates verify against ``client_ca``.

    Args:
        tls: certificate, key and optional client CA.
        require_client: refuse clients without a certificate (the ingress
            always does: only the twin may post envelopes).
    """
    return tls_server_context(
        tls.cert,
        tls.key,
        client_ca=tls.client_ca,
        require_client_cert=require_client or tls.require_client_cert,
    )


def load_spool_identity(key_path: Path) -> X25519Identity:
    """Load the gateway's own spool identity, creating it (mode 0600) on first start."""
    if not key_path.exists():
        key_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        identity = X25519Identity.generate()
        with contextlib.suppress(ConfigError):  # lost a race with another process
            write_private_file(key_path, identity_file_text(identity).encode())
    identities = load_identities(key_path)
    if len(identities) != 1:
        raise ConfigError(f"{key_path}: expected exactly one age identity")
    return identities[0]


async def handle_readyz(request: web.Request) -> web.StreamResponse:
    """``GET /readyz``: serving, policy loaded, audit writable, ledger reachable (503 otherwise).

    ``serving`` turns false the moment SIGTERM starts the drain, so a load
    balancer stops sending new transfers while the in-flight ones finish.
    """
    services = request.app[SERVICES]
    role = request.app.get(EGRESS) or request.app.get(ingress.INGRESS)
    checks: dict[str, bool] = {"serving": role is None or not role.closing}
    if POLICY in request.app:
        checks["policy"] = request.app[POLICY].loaded
    checks["audit"] = bool(services.audit.healthy)
    try:
        async with asyncio.timeout(2):
            await services.ledger.ping()
        checks["ledger"] = True
    except Exception:  # noqa: BLE001 - any failure means "not ready"
        checks["ledger"] = False
    ready = all(checks.values())
    return json_response({"ready": ready, "checks": checks}, status=200 if ready else 503)


async def handle_metrics(request: web.Request) -> web.StreamResponse:
    """``GET /metrics``: Prometheus text format, for ``metrics_tokens`` or loopback only.

    The metrics name organisations and routes and count the people each
    organisation exported this year, and the egress port serves every
    research client, so they are not public (see ``require_metrics_reader``).
    """
    services = request.app[SERVICES]
    require_metrics_reader(request, services.settings.metrics_tokens)
    return web.Response(
        body=services.metrics.render(),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )


async def handle_policy(request: web.Request) -> web.StreamResponse:
    """``GET /v1/policy`` (compliance officers): the version in force and whether the
    files on disk load (``gateway policy status``)."""
    state = request.app[EGRESS]
    status.officer_of(request, state)
    holder = request.app[POLICY]
    policy = holder.current()
    last = holder.last
    return json_response(
        {
            "name": policy.name,
            "version": policy.version,
            "rules": len(policy.rules),
            "files_load": last is None or last.ok,
            "rejected_sha256": last.rejected if last is not None and not last.ok else None,
            "errors": len(last.errors) if last is not None else 0,
        }
    )


async def handle_healthz(request: web.Request) -> web.StreamResponse:
    """``GET /healthz``: the process is up."""
    return json_response({"status": "ok"})


@web.middleware
async def forward_proxy_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Send absolute-URI requests (``PUT http://host/path``) to forward-proxy mode, ``CONNECT``
    to a tunnel, and every request inside a tunnel to the transfer it is (issue 18)."""
    inside = tunnel.tunnel_of(request)
    if inside is not None:
        return await tunnel.handle_tunnelled(request, inside)
    if request.method == "CONNECT":
        return await tunnel.handle_connect(request)
    # RFC 9112 §3.2.2: a proxy request carries the absolute-form target.
    if request.method in ("PUT", "POST") and request.raw_path.startswith(("http://", "https://")):
        return await proxy_routes.handle_forward_proxy(request)
    return await handler(request)


async def reload_policy(app: web.Application) -> ReloadResult:
    """Reload the policy off the event loop (SIGHUP and file changes call this).

    A new version or a rejected one is logged (with its errors) and recorded
    in the audit log; an unchanged reload is silent.
    """
    holder = app[POLICY]
    result = await asyncio.to_thread(holder.reload)
    if not (result.ok and not result.changed):
        event: PolicyEvent = "policy_loaded" if result.ok else "policy_rejected"
        for issue in result.errors:
            log.error("policy_error", error=str(issue))
        log.info(event, version=result.version, previous=result.previous_version)
        if result.ok:
            await _archive(app, holder.current())
        record = policy_record(
            event=event,
            policy_version=result.version or None,
            errors=len(result.errors),
            rejected=result.rejected or None,
        )
        try:
            await app[SERVICES].audit.append(record)
        except Exception:  # noqa: BLE001 - the reload itself stands; the log says why
            log.error("policy_audit_record_failed")
    if result.ok:
        watcher = app.get(_WATCHER)
        if watcher is not None:
            watcher.watch(holder.current().sources)
    return result


async def _archive(app: web.Application, policy: CompiledPolicy) -> None:
    """Keep the version in force in the policy archive beside the audit log."""
    directory = archive_dir(app[SERVICES].settings.audit.dir)
    try:
        await asyncio.to_thread(archive_policy, directory, policy.version, policy.content)
    except (OSError, ValueError) as exc:
        # Decisions still name the version; the operator log says why it is not kept.
        log.error("policy_archive_failed", error_type=type(exc).__name__)


_WATCHER = web.AppKey("policy_watcher", PolicyWatcher)


#: The file whose change publishes an edited policy (``policy_reload = "publish"``).
PUBLISH_MARKER = ".publish"


async def _idle() -> None:
    """No watching (``policy_reload = "sighup"``): SIGHUP alone reloads."""
    await asyncio.Event().wait()


async def _watch_policy(app: web.Application) -> None:
    watcher = app[_WATCHER]
    while True:
        await asyncio.sleep(POLICY_POLL_SECONDS)
        try:
            changed = await asyncio.to_thread(watcher.changed)
            if changed:
                await reload_policy(app)
        except Exception as exc:  # noqa: BLE001 - keep watching; the old version stays
            log.error("policy_watch_failed", error_type=type(exc).__name__)


#: How often the egress reads the ledger's totals into ``gateway_ledger_subjects``
#: and ``gateway_ledger_up`` (a ledger that went away is seen within this long).
LEDGER_REFRESH_SECONDS = 30.0


async def _watch_ledger(services: Services) -> None:
    """Keep the ledger gauges true between transfers (issue 16).

    At start the gauges are read from the ledger, not left absent until the
    first transfer with subjects; every :data:`LEDGER_REFRESH_SECONDS` they are read again, so
    another replica's exports (PostgreSQL), the new year (UTC+8) and an
    outage of the ledger all show. A series the ledger no longer has this
    year drops to 0 rather than keeping last year's count.
    """
    metrics = services.metrics
    shown: set[tuple[str, str]] = set()
    up: bool | None = None
    while True:
        try:
            totals = await services.ledger.totals(year=ledger_year())
        except LedgerUnavailable as exc:
            if up is not False:
                log.error("ledger_unreachable", error_type=type(exc).__name__)
            up = False
        else:
            current = {(t.organisation, t.category): t.subjects for t in totals}
            for key in shown - current.keys():
                metrics.ledger_subjects.labels(*key).set(0)
            for key, subjects in current.items():
                metrics.ledger_subjects.labels(*key).set(subjects)
            shown |= current.keys()
            if up is False:
                log.info("ledger_reachable")
            up = True
        metrics.ledger_up.set(1 if up else 0)
        await asyncio.sleep(LEDGER_REFRESH_SECONDS)


def decoder_budget(config: EgressConfig, services: Services) -> DecoderBudget:
    """The egress's decoder memory budget, watched by two metrics.

    Refusals count as ``gateway_fail_closed_total{reason="decoder_memory"}``
    and the bytes reserved are read at each scrape.
    """
    metrics = services.metrics
    budget = DecoderBudget(
        config.decoder_memory_bytes,
        on_refusal=metrics.fail_closed.labels("decoder_memory").inc,
    )
    metrics.decoder_memory.set_function(lambda: budget.reserved)
    return budget


def make_egress_app(services: Services, config: EgressConfig) -> web.Application:
    """The egress application (transfers, reviews, status, health, metrics)."""
    app = web.Application(
        middlewares=[
            access_middleware(services.metrics, "egress", services.settings.instance),
            expectation_middleware,
            problem_middleware,
            framing_middleware,
            content_coding_middleware,
            forward_proxy_middleware,
        ],
        client_max_size=CLIENT_MAX_SIZE,
        handler_args=HANDLER_ARGS,
    )
    holder = PolicyHolder(config.policy_dir, metrics=services.metrics)
    app[POLICY] = holder
    app[SERVICES] = services
    spool = SpoolDir(
        config.spool_dir,
        config.min_free_spool_bytes,
        held_root=config.held_dir,
        instance=services.settings.instance,
    )

    def current() -> CompiledPolicy | None:
        return holder.current() if holder.loaded else None

    state = EgressState(
        config=config,
        services=services,
        policy=current,
        tokens=TokenTable(config.tokens),
        spool=spool,
        spool_identity=load_spool_identity(config.spool_identity),
        decoder_budget=decoder_budget(config, services),
    )
    app[EGRESS] = state
    if config.intercept is not None:
        # Loaded now: a missing or readable-by-others key fails the start, not a CONNECT.
        app[tunnel.INTERCEPT] = InterceptionCA.load(
            config.intercept.cert, config.intercept.key, max_hosts=config.intercept.max_hosts
        )
    app[status.LOOKUPS] = status.new_lookup_slots()

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        first = await reload_policy(app)
        if not first.ok:
            errors = "; ".join(str(e) for e in first.errors[:3])
            raise ConfigError(f"{config.policy_dir}: the policy does not load: {errors}")
        swept = await asyncio.to_thread(spool.sweep)
        if swept:
            log.warning("spool_swept", files=swept)
        restored = await review_restore.restore_held(state, holder.current())
        if restored:
            log.info("reviews_restored", count=restored)
        if config.policy_reload == "publish":
            app[_WATCHER] = PolicyWatcher(config.policy_dir / PUBLISH_MARKER, marker=True)
        else:
            app[_WATCHER] = PolicyWatcher(config.policy_dir, holder.current().sources)
        watch_task = asyncio.create_task(
            _watch_policy(app) if config.policy_reload != "sighup" else _idle()
        )
        state.upstream_ssl = client_ssl_context(config.upstream_tls)
        state.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=config.max_concurrent)
        )
        review_queue.track_pending(state)
        background = [
            watch_task,
            asyncio.create_task(review_expiry.expire_periodically(state)),
            asyncio.create_task(records.republish_periodically(state)),
            asyncio.create_task(_watch_ledger(services)),
        ]
        if config.witness_url:
            background.append(
                asyncio.create_task(
                    witness.witness_loop(
                        state.session,
                        config.witness_url,
                        services.audit,
                        services.settings.witness_dir,
                        state.upstream_ssl,
                    )
                )
            )
        try:
            yield
        finally:
            for task in background:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await state.session.close()

    app.cleanup_ctx.append(lifetime)
    app.router.add_route(
        "PUT", "/v1/transfers/{route}/{path}", egress.handle_transfer, name="transfer"
    )
    app.router.add_route(
        "POST", "/v1/transfers/{route}/{path}", egress.handle_transfer, name="transfer"
    )
    app.router.add_get("/v1/transfers/{id}", status.handle_status, name="transfer-status")
    app.router.add_get("/v1/transfers/{id}/receipt", status.handle_receipt, name="transfer-receipt")
    app.router.add_get("/v1/policy", handle_policy, name="policy")
    app.router.add_get("/v1/reviews", review_queue.handle_reviews, name="reviews")
    app.router.add_get("/v1/reviews/{id}", review_queue.handle_review_detail, name="review")
    app.router.add_post(
        "/v1/reviews/{id}/{verb:approve|reject}", reviews.handle_review, name="review-decision"
    )
    app.router.add_get("/healthz", handle_healthz, name="healthz")
    app.router.add_get("/readyz", handle_readyz, name="readyz")
    app.router.add_get("/metrics", handle_metrics, name="metrics")
    return app


#: A pipelined payload whose header has not come after this long is dropped:
#: the egress gives up on a transfer after its total timeout (1 h by default).
PAYLOAD_MAX_AGE_SECONDS = 2 * 3600.0


async def _sweep_payloads(config: IngressConfig) -> None:
    while True:
        await asyncio.sleep(PAYLOAD_MAX_AGE_SECONDS / 2)
        removed = await asyncio.to_thread(
            ingress.sweep_payloads, config.payloads, PAYLOAD_MAX_AGE_SECONDS
        )
        if removed:
            log.warning("stale_payloads_swept", count=removed)


def make_ingress_app(services: Services, config: IngressConfig) -> web.Application:
    """The ingress application (envelopes from the twin, health, metrics)."""
    app = web.Application(
        middlewares=[
            access_middleware(services.metrics, "ingress", services.settings.instance),
            expectation_middleware,
            problem_middleware,
            framing_middleware,
            content_coding_middleware,
        ],
        client_max_size=CLIENT_MAX_SIZE,
        handler_args=HANDLER_ARGS,
    )
    app[SERVICES] = services
    state = ingress.IngressState(
        config=config, services=services, identities=load_identities(config.identity)
    )
    app[ingress.INGRESS] = state
    if config.witness is not None:
        app[witness.WITNESS] = witness.Witness(
            directory=services.settings.witness_dir,
            origin=config.witness.origin,
            log_key=load_verifier(config.witness.log_key),
            signer=services.signer,
        )

    async def lifetime(app: web.Application) -> AsyncIterator[None]:
        if witness.WITNESS in app:
            await asyncio.to_thread(app[witness.WITNESS].restore)
        config.spool_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        for stale in config.spool_dir.glob("*.age"):
            with contextlib.suppress(OSError):
                stale.unlink()
        # Plaintext of deliveries a crash interrupted: staged part files
        # (inboxes without O_TMPFILE) and older versions' .incoming/<id>.part;
        # all at start-up, then those idle past total_timeout on a timer.
        inboxes = inbox.file_inboxes(config.deliver)
        parts = await asyncio.to_thread(inbox.sweep_at_start, inboxes)
        if parts:
            log.warning("partial_deliveries_swept", files=parts)
        # Payloads whose header never came: at start-up all of them (their
        # egress transfers ended with this process's predecessor), then hourly.
        # A payload directory shared by the replicas holds the others' payloads
        # in flight: there only those past the age limit go, start-up or not.
        shared = config.payload_dir is not None
        await asyncio.to_thread(
            ingress.sweep_payloads, config.payloads, PAYLOAD_MAX_AGE_SECONDS if shared else 0.0
        )
        sweeper = asyncio.create_task(_sweep_payloads(config))
        part_sweeper = asyncio.create_task(
            inbox.sweep_periodically(
                inboxes, config.partial_sweep_interval, config.total_timeout, state.active
            )
        )
        state.destination_ssl = client_ssl_context(config.destination_tls)
        state.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=config.max_concurrent)
        )
        try:
            yield
        finally:
            for task in (sweeper, part_sweeper):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await state.session.close()

    app.cleanup_ctx.append(lifetime)
    app.router.add_post("/v1/envelopes/{route}/{path}", ingress.handle_envelope, name="envelope")
    app.router.add_put("/v1/payloads/{id}", ingress.handle_payload_put, name="payload")
    app.router.add_delete("/v1/payloads/{id}", ingress.handle_payload_delete, name="payload")
    app.router.add_get("/v1/witness", witness.handle_state, name="witness")
    app.router.add_post("/v1/witness", witness.handle_cosign, name="witness")
    app.router.add_get("/healthz", handle_healthz, name="healthz")
    app.router.add_get("/readyz", handle_readyz, name="readyz")
    app.router.add_get("/metrics", handle_metrics, name="metrics")
    return app
