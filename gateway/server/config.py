"""Server configuration: one TOML or YAML file, overridable by ``GATEWAY_…`` env vars.

One process runs the egress role (the research-facing side that classifies,
decides and sends), the ingress role (the twin that receives envelopes from the
other park and delivers them locally), or both. Every limit is a named constant
here, with where the number comes from; the file may tighten or relax it.

Environment variables override the file (twelve-factor style, so a Kubernetes
manifest can change one value without a new config map): nested keys use a
double underscore, e.g. ``GATEWAY_EGRESS__MAX_BODY_BYTES=1000000``.
"""

from __future__ import annotations

import hashlib
import re
import socket
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from gateway.crypto.certs import parse_pin
from gateway.errors import ConfigError

#: Largest accepted transfer body. SPEC §1 promises "GB-sized" datasets and §9 benchmarks a
#: 5 GB transfer; 64 GiB leaves room above that while bounding a runaway upload.
MAX_BODY_BYTES = 64 * 1024**3
#: Largest request line plus headers. 8 KiB per field is aiohttp's own default and what
#: nginx's large_client_header_buffers allows; bearer tokens and cert headers fit easily.
MAX_HEADER_FIELD_BYTES = 8190
#: Seconds without a single body byte before a transfer is aborted (a stalled client
#: must not hold a spool slot and a concurrency slot forever; nginx uses 60 s).
IDLE_TIMEOUT_SECONDS = 60.0
#: Wall-clock cap on one transfer, receiving through forwarding: 5 GB at a slow
#: 10 MB/s link is ~8.5 min, so one hour is generous yet finite.
TOTAL_TIMEOUT_SECONDS = 3600.0
#: Held reviews expire after a week without a decision (``review_expiry``).
REVIEW_EXPIRY_SECONDS = 7 * 86400.0
#: Transfers in progress at once per process; past it new ones get 503 + Retry-After.
#: SPEC §9 requires 256 concurrent transfers; 512 keeps headroom for the twin's traffic.
MAX_CONCURRENT_TRANSFERS = 512
#: Retry-After (seconds) sent with a 503 for overload or an unavailable dependency.
RETRY_AFTER_SECONDS = 5
#: Below this much free space in the spool directory the gateway refuses new transfers
#: (fail closed) instead of running out of disk mid-transfer; 1 GiB is several
#: typical datasets of headroom.
MIN_FREE_SPOOL_BYTES = 1024**3
#: Decoder memory (decompression windows and the decode layers' buffers) all transfers of
#: one egress process may hold at once (gateway.classify.budget). A ``zstd --long=27``
#: window is 128 MiB and ``xz -9`` needs 64 MiB: 1 GiB admits 7 such zstd or 15 such xz
#: uploads at once and thousands of gzip ones (~0.25 MiB each), so 512 ordinary transfers
#: never meet it, while a 2 GiB container keeps 1 GiB for everything else. Past it a
#: transfer whose window does not fit is answered 503 + Retry-After.
DECODER_MEMORY_BYTES = 1024**3
#: Seconds graceful shutdown waits for in-flight transfers before aborting them
#: (Kubernetes' default terminationGracePeriodSeconds is 30; stay under it).
SHUTDOWN_DRAIN_SECONDS = 25.0
#: Seconds to connect to the twin or the destination before 504.
UPSTREAM_CONNECT_TIMEOUT_SECONDS = 10.0
#: Seconds to wait for the upstream's answer after the last byte is sent.
UPSTREAM_READ_TIMEOUT_SECONDS = 120.0
#: How often the policy directory is checked for changes (hot reload, SPEC §4).
POLICY_POLL_SECONDS = 2.0

# Connections (issue 11, finding 2: slow clients must not hold the gateway). What
# Envoy, nginx and HAProxy bound by default, and why each number; docs/running.md
# "Connection limits" says the same for operators.

#: Seconds a client has to complete its request line and headers: from the accepted
#: connection (TLS handshake included), or on a kept-alive connection from the first
#: byte of the next request. A slowloris client sends a header byte every few seconds
#: to hold a connection forever. HAProxy's ``timeout http-request`` is commonly 10 s,
#: nginx's ``client_header_timeout`` 60 s; 15 s is ample for any real client and link.
REQUEST_HEAD_TIMEOUT_SECONDS = 15.0
#: Seconds an idle kept-alive connection stays open between requests (nginx's
#: ``keepalive_timeout`` default, 75 s). It exceeds the 15 s an aiohttp client (the
#: twin's egress) keeps an idle connection, so the server never closes one that a
#: client is about to reuse; aiohttp's own default is an hour.
KEEPALIVE_TIMEOUT_SECONDS = 75.0
#: Seconds a client may leave the gateway's answer unread once the socket's send buffer
#: is full (nginx ``send_timeout``, 60 s): a client that pipelines requests and never
#: reads would otherwise hold its connection forever; then the connection is aborted.
SEND_TIMEOUT_SECONDS = 60.0
#: Open connections per listener. One HTTP/1.1 connection carries one transfer at a
#: time, so twice MAX_CONCURRENT_TRANSFERS leaves room for status polls and idle
#: keep-alives; lowered at start when RLIMIT_NOFILE cannot back it (see FD_RESERVE).
MAX_CONNECTIONS = 2 * MAX_CONCURRENT_TRANSFERS
#: Open connections per client address (nginx ``limit_conn``), so that one host cannot
#: take every connection. The twin and a busy lab behind one NAT address reach the
#: transfer concurrency, so it is that number; a flood from one address holds no more.
MAX_CONNECTIONS_PER_CLIENT = MAX_CONCURRENT_TRANSFERS
#: The listen(2) backlog (nginx's default, 511): connections the kernel queues before
#: the gateway accepts them. asyncio may accept this many in one burst before the
#: connection caps are checked, so the descriptor budget reserves it.
LISTEN_BACKLOG = 511
#: File descriptors never given to connections: audit segments and checkpoints, the
#: policy files a reload reads, the ledger, TLS certificate reloads, log files,
#: witness notes, plus one accept burst (LISTEN_BACKLOG). Without a reserve a
#: connection flood near the open-files limit made a policy reload fail.
FD_RESERVE = 128 + LISTEN_BACKLOG
#: Descriptors one connection may account for at worst: its socket, its transfer's
#: spool file and the upstream connection to the twin or destination.
FDS_PER_CONNECTION = 3
#: Accept failures (EMFILE, ENFILE, ENOBUFS) are logged at most once per this many
#: seconds, with a count: asyncio logs a traceback per failed accept, tens of MB of
#: log in seconds under a flood.
ACCEPT_ERROR_LOG_SECONDS = 10.0
#: How often a running ingress sweeps part files of interrupted deliveries (the
#: staging fallback for inboxes without O_TMPFILE, and ``.incoming/`` of older
#: versions); each goes once idle for ``total_timeout``. Every 10 min: with the
#: 1 h default, a crash's plaintext outlives it by at most 70 min without a
#: restart (a restart sweeps at once), for one directory listing per inbox.
PARTIAL_SWEEP_SECONDS = 600.0

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def _token_digests(value: tuple[str, ...]) -> tuple[str, ...]:
    """Accept only lower-case hex SHA-256 digests, as :func:`token_digest` writes them.

    A token pasted here by mistake instead of its digest must stop the start,
    not silently never match (and sit in a config file in the clear).
    """
    for item in value:
        if not _SHA256_HEX.fullmatch(item):
            raise ValueError(
                "holds hex SHA-256 digests of bearer tokens (64 lower-case hex digits), "
                "not the tokens themselves"
            )
    return value


#: Bearer tokens configured by their SHA-256 only (``officer_tokens``, ``metrics_tokens``).
TokenDigests = Annotated[tuple[str, ...], AfterValidator(_token_digests)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ListenerLimits(_Section):
    """Connection limits of one listener (egress or ingress); docs/running.md lists them.

    Attributes:
        head_timeout: seconds to complete a request line and headers (TLS
            handshake included); past it the connection gets ``408`` and is closed.
        keepalive_timeout: seconds an idle kept-alive connection stays open.
        send_timeout: seconds an answer may stay unread by the client (a full
            send buffer) before the connection is aborted.
        max_connections: open connections at once (lowered at start when the
            open-files limit cannot back it).
        max_connections_per_client: open connections from one client address.
    """

    head_timeout: float = Field(default=REQUEST_HEAD_TIMEOUT_SECONDS, gt=0, le=3600)
    keepalive_timeout: float = Field(default=KEEPALIVE_TIMEOUT_SECONDS, gt=0, le=3600)
    send_timeout: float = Field(default=SEND_TIMEOUT_SECONDS, gt=0, le=3600)
    max_connections: int = Field(default=MAX_CONNECTIONS, gt=0)
    max_connections_per_client: int = Field(default=MAX_CONNECTIONS_PER_CLIENT, gt=0)


class TokenEntry(_Section):
    """A bearer token mapped to a sender identity.

    Only the token's SHA-256 is stored, so a leaked config file does not leak
    credentials; ``gateway demo`` prints the tokens it generates once.

    Attributes:
        sha256: hex SHA-256 of the token (``gateway serve`` never sees the token itself).
        identity: the sender identity in the policy's ``senders``.
    """

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    identity: str = Field(min_length=1)


class OfficerEntry(_Section):
    """A compliance officer's bearer token (its SHA-256) and the officer's name.

    The name is what the audit log records of every decision the officer
    makes (``officer``), so an auditor can tell who approved what.
    """

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")


class TlsListener(_Section):
    """A TLS server certificate, with an optional CA for client certificates.

    Attributes:
        cert: PEM certificate chain.
        key: PEM private key.
        client_ca: PEM CA bundle; client certificates signed by it are verified.
        require_client_cert: refuse connections without a client certificate.
    """

    cert: Path
    key: Path
    client_ca: Path | None = None
    require_client_cert: bool = False


def _spki_pins(value: tuple[str, ...]) -> tuple[str, ...]:
    """Public-key pins in canonical form (bare base64), whichever way they were written."""
    return tuple(parse_pin(item) for item in value)


#: Public-key pins (``twin_spki``, ``pin_spki``): base64 SHA-256 of a certificate's
#: SubjectPublicKeyInfo, RFC 7469's pin-sha256, bare or ``sha256//``-prefixed.
SpkiPins = Annotated[tuple[str, ...], AfterValidator(_spki_pins)]


class InterceptConfig(_Section):
    """The interception CA that ``CONNECT`` tunnels are terminated with (issue 18).

    Attributes:
        cert: the CA certificate (PEM) the organisation's clients trust.
        key: its private key (PEM, mode 0600: refused when group-readable).
        max_hosts: leaf certificates kept in memory (one per tunnelled host);
            the least recently used goes past it. Leaves are never written to disk.
    """

    cert: Path
    key: Path
    max_hosts: int = Field(default=1024, gt=0, le=100_000)


class TlsClient(_Section):
    """A client certificate used for mutual TLS to the twin or the destination.

    Attributes:
        cert: PEM client certificate.
        key: PEM private key.
        ca: PEM CA bundle that must have signed the server's certificate.
        pin_spki: public-key pins (``gateway certs show`` prints a certificate's).
            When set, every server reached with this client certificate (the
            twin's ingress and any ``https://`` destination) must hold one of
            these keys as well as a certificate from ``ca`` for its name: a
            certificate mis-issued under the right name for another key fails
            the handshake, before a byte of the request is sent. List the old
            and the new key while a server's key is rotated. Empty: the CA
            and the name alone decide.
    """

    cert: Path
    key: Path
    ca: Path
    pin_spki: SpkiPins = ()


class EgressConfig(_Section):
    """The research-facing side: classify, decide, forward.

    Attributes:
        host: listen address.
        port: listen port (0 picks a free one).
        tls: TLS for the client-facing listener (plain HTTP when absent: local dev).
        policy_dir: the policy set (``policies/``).
        spool_dir: encrypted spools of transfers in progress and, unless
            ``held_dir`` says otherwise, held reviews (``held/``).
        held_dir: where the replicas of a park keep their held reviews, on a
            volume they share: each in its own ``<held_dir>/<instance>/``, so
            any replica can decide any review, also one whose replica is gone
            (issue 16). Put ``spool_dir`` on the same mount: a review is held
            by renaming its spool (across mounts it is copied). Unset: under
            ``spool_dir``, for a single gateway.
        spool_identity: age identity file of the gateway's own spool key; held
            reviews are re-encrypted to it so they survive a restart.
        tokens: bearer tokens (by SHA-256) mapped to sender identities.
        officer_tokens: SHA-256 of compliance-officer tokens (review approval);
            such an officer is recorded as ``officer-`` and the digest's first
            eight hex digits. Prefer ``officers``.
        officers: named compliance officers (token SHA-256 and name).
        upstream_tls: client certificate for mutual TLS to the twin or destination.
        max_body_bytes: 413 above this.
        max_concurrent: 503 above this many transfers in progress.
        min_free_spool_bytes: fail closed below this much free spool disk.
        decoder_memory_bytes: decompression windows all transfers may hold at
            once; a transfer whose window does not fit now gets 503 + Retry-After.
        idle_timeout: seconds without a body byte before abort.
        total_timeout: seconds for a whole transfer.
        review_expiry: seconds a held review waits for an officer before it is rejected as
            expired.
        witness_url: the twin's ingress base URL; when set, this gateway's
            audit checkpoints are offered to the twin for co-signing.
        pipelined: stream the age payload of a large envelope transfer to the
            twin while it is still classified, and send the header (the only
            thing that makes it readable) after an allow verdict (SPEC §6).
        limits: connection limits of the listener (request-head and keep-alive
            time-outs, connection caps in total and per client address).
        intercept: the interception CA: with it, ``CONNECT host:port`` to a
            route's destination opens a tunnel whose TLS the egress terminates,
            so ``HTTPS_PROXY`` clients work unchanged (:mod:`gateway.server.tunnel`).
            Without it a ``CONNECT`` is refused.
    """

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    tls: TlsListener | None = None
    policy_dir: Path = Path("policies")
    spool_dir: Path = Path("var/spool/egress")
    held_dir: Path | None = None
    spool_identity: Path = Path("var/keys/spool.agekey")
    tokens: tuple[TokenEntry, ...] = ()
    officer_tokens: TokenDigests = ()
    officers: tuple[OfficerEntry, ...] = ()
    upstream_tls: TlsClient | None = None
    max_body_bytes: int = Field(default=MAX_BODY_BYTES, gt=0)
    max_concurrent: int = Field(default=MAX_CONCURRENT_TRANSFERS, gt=0)
    min_free_spool_bytes: int = Field(default=MIN_FREE_SPOOL_BYTES, ge=0)
    decoder_memory_bytes: int = Field(default=DECODER_MEMORY_BYTES, gt=0)
    idle_timeout: float = Field(default=IDLE_TIMEOUT_SECONDS, gt=0)
    total_timeout: float = Field(default=TOTAL_TIMEOUT_SECONDS, gt=0)
    witness_url: str | None = None
    pipelined: bool = True
    limits: ListenerLimits = ListenerLimits()
    intercept: InterceptConfig | None = None
    #: A held review no officer decided within this many seconds is rejected as
    #: expired (recorded ``rejected``, its spool deleted). Default: 7 days.
    review_expiry: float = Field(default=REVIEW_EXPIRY_SECONDS, ge=60)
    #: When an edited policy is loaded: ``auto`` (any file change, and SIGHUP),
    #: ``sighup`` (only on SIGHUP) or ``publish`` (when the ``.publish`` marker
    #: file in the policy directory changes, and SIGHUP): a multi-file edit
    #: then goes live at once, not file by file.
    policy_reload: Literal["auto", "sighup", "publish"] = "auto"


class WitnessPeer(_Section):
    """The twin's audit log this ingress co-signs checkpoints of.

    Attributes:
        origin: the twin log's checkpoint origin line.
        log_key: the twin log's note verifier key (``name+id+key``) or a file holding it.
    """

    origin: str = Field(min_length=1)
    log_key: str = Field(min_length=1)


class IngressConfig(_Section):
    """The twin side: accept envelopes over mutual TLS and deliver them locally.

    Attributes:
        host: listen address.
        port: listen port.
        tls: server certificate; ``client_ca`` is the other park's CA and a
            client certificate is always required.
        identity: age identity file (``AGE-SECRET-KEY-1…``) that opens envelopes.
        deliver: route name -> local destination, ``file:///dir`` or ``https://…``.
        destination_tls: client certificate for ``https://`` destinations.
        spool_dir: ciphertext of envelopes being received for ``https://`` delivery.
        payload_dir: where pipelined payloads wait for their header (default
            ``spool_dir``). Replicas of a park share one (a shared volume), so a
            payload and its header may reach different replicas (issue 16).
        max_body_bytes: 413 above this (the egress cap plus age overhead).
        max_concurrent: 503 above this many envelopes in progress.
        idle_timeout: seconds without a body byte before abort.
        total_timeout: seconds for one envelope or payload, receiving through
            delivery to an ``https://`` destination (504 past it).
        min_free_spool_bytes: refuse payloads (503) below this much free spool disk.
        unnamed_temp_files: write a ``file://`` delivery as an unnamed
            temporary file in the inbox (``O_TMPFILE``), linked into place on
            commit, so a crash leaves nothing. False always uses the staging
            directory beside the inbox, as inboxes whose file system lacks
            ``O_TMPFILE`` do by themselves (:mod:`gateway.server.inbox`).
        partial_sweep_interval: seconds between sweeps of the part files
            interrupted deliveries left (staging directories, and older
            versions' ``.incoming/``); one goes once not written to for
            ``total_timeout``. All go at start-up.
        witness: co-sign the twin's audit checkpoints (SPEC §7).
        twin_names: subject CNs of the twin gateway's client certificate. The
            other park's CA also issues its research senders' certificates, so
            a certificate that merely chains to ``client_ca`` proves nothing:
            only these names may post envelopes and payloads or ask for
            witnessing. Required; an empty list refuses every peer (fail closed).
        twin_fingerprints: SHA-256 fingerprints (hex, ``AB:CD:…`` as ``gateway
            certs show`` prints them, or plain) of the twin's client
            certificate. When set, the certificate must match one of them as
            well as a name: list the old and the new one while rotating.
        twin_spki: public-key pins of the twin's client certificate (base64
            SHA-256 of its SubjectPublicKeyInfo, RFC 7469 ``pin-sha256``, bare
            or ``sha256//``-prefixed, as ``gateway certs init`` and ``certs
            show`` print them). The name says who the CA meant; the key says
            who holds it: a certificate the CA mis-issued under the twin's
            name for another key is refused. Unlike a fingerprint, a pin
            survives renewal with the same key; list the old and the new key
            while the twin's key is rotated. Required when ``twin_names``
            admits anyone, unless ``twin_fingerprints`` pins the whole
            certificate (which names its key too): a name alone no longer
            loads, so a config from before key pinning fails at start
            instead of staying open to a mis-issued certificate.
        limits: connection limits of the listener.
    """

    host: str = "127.0.0.1"
    port: int = Field(default=9443, ge=0, le=65535)
    tls: TlsListener
    identity: Path
    twin_names: tuple[str, ...]
    twin_fingerprints: tuple[str, ...] = ()
    # Validated even when absent: its absence is the error (see _twin_pinned_by_key).
    twin_spki: SpkiPins = Field(default=(), validate_default=True)
    deliver: dict[str, str] = Field(default_factory=dict)
    destination_tls: TlsClient | None = None
    spool_dir: Path = Path("var/spool/ingress")
    payload_dir: Path | None = None

    @property
    def payloads(self) -> Path:
        """Where pipelined payloads wait for their header."""
        return self.payload_dir if self.payload_dir is not None else self.spool_dir

    max_body_bytes: int = Field(default=MAX_BODY_BYTES + MAX_BODY_BYTES // 1024, gt=0)
    max_concurrent: int = Field(default=MAX_CONCURRENT_TRANSFERS, gt=0)
    idle_timeout: float = Field(default=IDLE_TIMEOUT_SECONDS, gt=0)
    total_timeout: float = Field(default=TOTAL_TIMEOUT_SECONDS, gt=0)
    min_free_spool_bytes: int = Field(default=MIN_FREE_SPOOL_BYTES, ge=0)
    unnamed_temp_files: bool = True
    partial_sweep_interval: float = Field(default=PARTIAL_SWEEP_SECONDS, gt=0)
    witness: WitnessPeer | None = None
    limits: ListenerLimits = ListenerLimits()

    @field_validator("twin_names")
    @classmethod
    def _names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not name.strip() or name != name.strip():
                raise ValueError("twin_names holds certificate subject CNs, without blanks around")
        return value

    @field_validator("twin_fingerprints")
    @classmethod
    def _fingerprints(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        out = []
        for item in value:
            digest = item.replace(":", "").lower()
            if not _SHA256_HEX.fullmatch(digest):
                raise ValueError("twin_fingerprints holds SHA-256 certificate fingerprints (hex)")
            out.append(digest)
        return tuple(out)

    @field_validator("twin_spki")
    @classmethod
    def _twin_pinned_by_key(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        # Runs after twin_names and twin_fingerprints (field order), so both are in info.data.
        if value or not info.data.get("twin_names") or info.data.get("twin_fingerprints"):
            return value
        raise ValueError(
            "required: pin the twin's client certificate by its public key. A subject CN "
            "alone admits any certificate its CA issues under that name. Paste the pin "
            "`gateway certs show <twin client.crt>` prints (SPKI SHA-256), e.g. "
            'twin_spki = ["<base64>"]'
        )

    @field_validator("deliver")
    @classmethod
    def _destinations(cls, value: dict[str, str]) -> dict[str, str]:
        for route, url in value.items():
            if not (url.startswith("file://") or url.startswith("https://")):
                raise ValueError(f"route {route!r}: destination must be file:// or https://")
        return value


class AuditConfig(_Section):
    """Where the transparency log lives and who signs it.

    Attributes:
        dir: segment files and checkpoints.
        signing_key: Ed25519 private key (PEM) for checkpoints.
        origin: the checkpoint origin line (C2SP tlog-checkpoint), unique per log.
    """

    dir: Path = Path("var/audit")
    signing_key: Path = Path("var/keys/audit.key")
    origin: str = "hksz-gateway.local/audit"


#: An instance name: what a host or pod name may be (RFC 1123 labels, dots allowed).
_INSTANCE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
#: Written in a setting of :data:`INSTANCE_SETTINGS`, replaced by the instance name.
INSTANCE_PLACEHOLDER = "{instance}"
#: The settings that may name the instance: what each replica keeps to itself.
INSTANCE_SETTINGS: tuple[tuple[str, str], ...] = (
    ("audit", "dir"),
    ("audit", "origin"),
    ("egress", "spool_dir"),
    ("ingress", "spool_dir"),
    ("", "witness_dir"),
)


def _host_name() -> str:
    name = socket.gethostname().split(".")[0] or "gateway"
    return name if _INSTANCE_RE.fullmatch(name) else "gateway"


class GatewaySettings(BaseSettings):
    """The whole configuration of one ``gateway serve`` process.

    Attributes:
        name: park name for logs and audit records (``hk``, ``sz``).
        instance: this process's stable name among the replicas of its park
            (``--instance``, ``GATEWAY_INSTANCE``; default the host name). It
            replaces ``{instance}`` in the settings each replica keeps to
            itself (:data:`INSTANCE_SETTINGS`): its audit directory and
            checkpoint origin, spools, witness store. Everything else comes
            from the one shared configuration file.
        egress: egress role, when this process runs it.
        ingress: ingress role, when this process runs it.
        audit: the audit log.
        ledger_url: ``memory:``, a SQLite path, or ``postgresql://…``.
        ledger_password_file: a file holding PostgreSQL's password (mode
            0600), so the URL in the configuration carries none; a password
            in a process's environment is readable by whoever may read
            ``/proc/<pid>/environ`` and ends up in crash reports.
        secret_file: 32-byte HMAC secret for distinct-value hashing (SPEC §3.2).
        drain_seconds: graceful-shutdown deadline for in-flight transfers.
        witness_dir: co-signed checkpoints (given to and received from the twin).
        metrics_tokens: SHA-256 of the bearer tokens that may read ``/metrics``
            on either listener. The metrics name organisations, routes and how
            many people each organisation exported this year, and the egress
            port is open to every research client. Empty (the default): only
            loopback peers may read them (a Prometheus on the same host); set
            it when Prometheus scrapes from another host or pod, and give
            Prometheus the token.
    """

    model_config = SettingsConfigDict(
        env_prefix="GATEWAY_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    name: str = "gateway"
    instance: str = Field(default_factory=_host_name)
    egress: EgressConfig | None = None
    ingress: IngressConfig | None = None
    audit: AuditConfig = AuditConfig()
    ledger_url: str = "var/ledger.sqlite3"
    ledger_password_file: Path | None = None
    secret_file: Path = Path("var/keys/secret")
    drain_seconds: float = Field(default=SHUTDOWN_DRAIN_SECONDS, ge=0)
    witness_dir: Path = Path("var/witness")
    metrics_tokens: TokenDigests = ()

    @model_validator(mode="before")
    @classmethod
    def _name_the_instance(cls, data: Any) -> Any:
        """Put the instance name where a per-replica setting says ``{instance}``."""
        if not isinstance(data, dict):
            return data
        instance = data.get("instance") or _host_name()
        if not isinstance(instance, str) or not _INSTANCE_RE.fullmatch(instance):
            raise ValueError(
                f"instance: {instance!r} is not a host-like name "
                "(letters, digits, '.', '_', '-'; at most 63)"
            )
        data = {**data, "instance": instance}
        for section, key in INSTANCE_SETTINGS:
            holder = data if not section else data.get(section)
            if isinstance(holder, dict) and isinstance(holder.get(key), str | Path):
                value = str(holder[key])
                if INSTANCE_PLACEHOLDER in value:
                    replaced = value.replace(INSTANCE_PLACEHOLDER, instance)
                    if section:
                        data[section] = {**holder, key: replaced}
                    else:
                        data[key] = replaced
        return data

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment first: it overrides the file, which arrives as init kwargs.
        return (env_settings, init_settings)


def token_digest(token: str) -> str:
    """The hex SHA-256 under which a bearer token is stored in the config."""
    return hashlib.sha256(token.encode()).hexdigest()


def _read_mapping(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from None
    try:
        if path.suffix.lower() == ".toml":
            data: Any = tomllib.loads(text)
        else:
            data = yaml.safe_load(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: invalid YAML") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the config must be a mapping of settings")
    return data


_PATH_KEYS = frozenset(
    {
        "cert",
        "key",
        "client_ca",
        "ca",
        "policy_dir",
        "spool_dir",
        "held_dir",
        "payload_dir",
        "spool_identity",
        "identity",
        "dir",
        "signing_key",
        "secret_file",
        "witness_dir",
        "ledger_password_file",
    }
)


def _anchor_paths(base: Path, data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key == "deliver" and isinstance(value, dict):
            out[key] = {route: _anchor_destination(base, url) for route, url in value.items()}
        elif isinstance(value, dict):
            out[key] = _anchor_paths(base, value)
        elif key in _PATH_KEYS and isinstance(value, str) and not Path(value).is_absolute():
            out[key] = str(base / value)
        elif key == "ledger_url" and isinstance(value, str):
            out[key] = _anchor_ledger_url(base, value)
        else:
            out[key] = value
    return out


def _anchor_ledger_url(base: Path, url: str) -> str:
    """A relative SQLite ledger (a bare path or ``sqlite:///rel``) is taken relative to the file."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        return "sqlite:///" + str(base / url.removeprefix("sqlite:///"))
    if "://" in url or url.startswith("memory:") or Path(url).is_absolute():
        return url
    return str(base / url)


def _anchor_destination(base: Path, value: Any) -> Any:
    """A bare directory in ``deliver`` becomes a ``file://`` URL (relative to the file)."""
    if not isinstance(value, str) or value.startswith(("file://", "https://", "http://")):
        return value
    path = Path(value)
    return (path if path.is_absolute() else base / path).as_uri()


def load_settings(path: Path | None = None) -> GatewaySettings:
    """Load the configuration from ``path`` (TOML or YAML) with env overrides.

    Relative paths inside the file are taken relative to the file's directory,
    so a config works from any working directory. Without a file, the embedded
    defaults apply (plus the environment).

    Raises:
        ConfigError: the file is unreadable or invalid; the message names the
            file and the offending setting.
    """
    data: dict[str, Any] = {}
    where = "environment"
    if path is not None:
        data = _anchor_paths(path.resolve().parent, _read_mapping(path))
        where = str(path)
    try:
        return GatewaySettings(**data)
    except SettingsError as exc:
        # pydantic-settings reads a list or table from a GATEWAY_… variable as
        # JSON only; a bare value (one digest, one name) fails before validation.
        raise ConfigError(
            f"{exc}: a list in a GATEWAY_… variable is JSON, e.g. "
            "GATEWAY_METRICS_TOKENS='[\"<sha256>\"]'"
        ) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(part) for part in first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"{where}: {loc}: {message}" if loc else f"{where}: {message}") from None
