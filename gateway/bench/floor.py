"""The floor of a 1 KB transfer: its data path and nothing else (issue 17).

The 1 KB latency target (p99 within 5 ms of a plain pass-through, one at a
time and 64 at once) is measured against a relay that only copies bytes. A
gateway must do more for every transfer, whatever language it is written
in. The data path of an allowed 1 KB envelope transfer (SPEC §5-§7) is

* at the egress: one HTTP exchange with the sender; classify the body and
  its name with the shipped detector set; seal it into an age file for the
  twin's recipient (one X25519 exchange); append the verdict record and wait
  until it is durable; one mutual-TLS exchange with the twin over a pooled
  connection; append the delivery record and wait until it is durable;
* at the twin: open the age file (one X25519 exchange), write the file and
  sync it while its record is appended and synced, then rename it into the
  inbox and sync the directory.

This module runs exactly that, on aiohttp like the gateway, with the
gateway's own classifier and age code and a record log that groups the
records waiting at once into one ``fdatasync`` (as the audit writer does).
Like the gateway with a small body, it classifies and seals on the event
loop and leaves only the syncs and file operations to worker threads.
It leaves out everything around the data path, required or not: the policy
and the ledger, the audit log's Merkle tree, signatures and index, the
request checks (token, pins, names, headers), metrics and logs. ``gateway
bench proxy`` measures it from the same client, in processes of their own
like the gateways, between the pass-through and the gateway, so the 1 KB
figures split into what the data path takes on this machine (floor over
pass-through) and what everything else adds (gateway over floor).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import aiohttp
from aiohttp import web

from gateway.bench.durability import RECORD_BYTES
from gateway.classify.detectors import DetectorSet
from gateway.classify.engine import Scanner
from gateway.crypto.age import AgeDecryptor, AgeEncryptor
from gateway.crypto.certs import ParkPaths, init_dev_pki
from gateway.crypto.keys import (
    X25519Identity,
    X25519Recipient,
    identity_file_text,
    parse_identities,
    write_private_file,
)
from gateway.crypto.tls import client_ssl_context, server_ssl_context
from gateway.posix import write_all

#: The key the floor processes announce their URL under (their JSON ``listening`` line).
URL_KEY: Final = "url"


class RecordLog:
    """An append-only file whose records are durable when :meth:`append` returns.

    The records that arrive while a sync runs wait for the next one and share
    it (group commit), as the gateway's audit writer does: at 64 transfers at
    once, one ``fdatasync`` serves many.
    """

    def __init__(self, path: Path) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._waiting: list[tuple[bytes, asyncio.Future[None]]] = []
        self._writing: list[tuple[bytes, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._task = asyncio.ensure_future(self._run())

    async def append(self, record: dict[str, Any]) -> None:
        """Append one record; return once it is on disk."""
        line = json.dumps(record, separators=(",", ":"), sort_keys=True)
        done = asyncio.get_running_loop().create_future()
        # Padded to the size of a transfer record's canonical JSON.
        self._waiting.append(((line.ljust(RECORD_BYTES - 1) + "\n").encode(), done))
        self._wake.set()
        await done

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._waiting = self._waiting, []
            self._writing = batch
            try:
                await asyncio.to_thread(self._write, b"".join(line for line, _ in batch))
            except OSError as exc:
                for _, done in batch:
                    if not done.done():  # its request may have been cancelled
                        done.set_exception(exc)
            else:
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)

    def _write(self, data: bytes) -> None:
        write_all(self._fd, data)
        os.fdatasync(self._fd)

    async def close(self) -> None:
        """Stop the writer and close the file; records still waiting are cancelled."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        for _, done in (*self._writing, *self._waiting):
            done.cancel()  # a no-op for those already answered
        os.close(self._fd)


@dataclass(frozen=True, slots=True)
class PairFiles:
    """Where a benchmark pair's keys and files are, under one root: both parks'
    dev PKI, the twin's age identity and its inbox (the floor's and the gateways')."""

    root: Path

    @property
    def hk(self) -> ParkPaths:
        return ParkPaths(self.root / "pki" / "hk")

    @property
    def sz(self) -> ParkPaths:
        return ParkPaths(self.root / "pki" / "sz")

    @property
    def identity_file(self) -> Path:
        return self.root / "sz.agekey"

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    def create(self) -> None:
        """The dev PKI of both parks, the twin's age identity and its inbox."""
        init_dev_pki(self.root / "pki")
        write_private_file(
            self.identity_file, identity_file_text(X25519Identity.generate()).encode()
        )
        self.inbox.mkdir()

    def identity(self) -> X25519Identity:
        """The twin's age identity (its recipient is what the egress seals to)."""
        (identity,) = parse_identities(self.identity_file.read_text(), str(self.identity_file))
        return identity


def _egress_app(keys: PairFiles, twin_url: str) -> web.Application:
    """The egress's data path for one transfer, as ``PUT /{name}``."""
    detectors = DetectorSet.build()
    secret = os.urandom(32)
    recipients: list[X25519Recipient] = [keys.identity().recipient]
    upstream_tls = client_ssl_context(
        ca=keys.sz.ca_cert, cert=keys.hk.cert("client"), key=keys.hk.key("client")
    )
    app = web.Application()
    state: dict[str, Any] = {}

    async def start(app: web.Application) -> None:
        state["log"] = RecordLog(keys.root / "egress-records.log")
        state["session"] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=upstream_tls, limit=0)
        )

    async def stop(app: web.Application) -> None:
        await state["session"].close()
        await state["log"].close()

    async def transfer(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = await request.read()
        with Scanner(detectors, secret) as scanner:
            scanner.scan_name(name)
            scanner.feed(body)
            summary = scanner.finish()
        sealer = AgeEncryptor(recipients)
        envelope = sealer.header() + sealer.update(body) + sealer.finish()
        log: RecordLog = state["log"]
        record = {"event": "allowed", "name": name, "sha256": summary.sha256, "size": summary.size}
        await log.append(record)
        async with state["session"].post(f"{twin_url}/{name}", data=envelope) as answer:
            await answer.read()
            if answer.status != 201:
                raise web.HTTPBadGateway(text=f"twin answered {answer.status}")
        await log.append({**record, "event": "delivered"})
        return web.json_response({"sha256": summary.sha256}, status=201)

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_put("/{name}", transfer)
    return app


def _twin_app(keys: PairFiles) -> web.Application:
    """The twin's data path for one envelope, as ``POST /{name}``."""
    identity = keys.identity()
    inbox = keys.inbox
    app = web.Application()
    state: dict[str, Any] = {}

    async def start(app: web.Application) -> None:
        state["log"] = RecordLog(keys.root / "twin-records.log")
        state["inbox_fd"] = os.open(inbox, os.O_RDONLY)

    async def stop(app: web.Application) -> None:
        await state["log"].close()
        os.close(state["inbox_fd"])

    def write_part(part: Path, plaintext: bytes) -> None:
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            write_all(fd, plaintext)
            os.fsync(fd)
        finally:
            os.close(fd)

    def place(part: Path, name: str) -> None:
        os.rename(part, inbox / name)
        os.fsync(state["inbox_fd"])

    async def envelope(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        opener = AgeDecryptor([identity])
        plaintext = opener.feed(await request.read()) + opener.finish()
        part = inbox / f".part-{name}"
        log: RecordLog = state["log"]
        await asyncio.gather(
            asyncio.to_thread(write_part, part, plaintext),
            log.append({"event": "delivered", "name": name, "size": len(plaintext)}),
        )
        await asyncio.to_thread(place, part, name)
        return web.json_response({"delivered": name}, status=201)

    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_post("/{name}", envelope)
    return app


async def _serve_until_killed(app: web.Application, ssl_context: Any = None) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024, ssl_context=ssl_context)
    await site.start()
    scheme = "https" if ssl_context is not None else "http"
    url = f"{scheme}://127.0.0.1:{runner.addresses[0][1]}"
    print(json.dumps({"event": "listening", URL_KEY: url}), flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def serve(role: str, root: str, twin_url: str = "") -> None:
    """Run the floor's ``egress`` or ``twin`` until killed (its own process)."""
    keys = PairFiles(Path(root))
    if role == "twin":
        tls = server_ssl_context(
            keys.sz.cert("server"),
            keys.sz.key("server"),
            client_ca=keys.hk.ca_cert,
            require_client_cert=True,
        )
        asyncio.run(_serve_until_killed(_twin_app(keys), tls))
    else:
        asyncio.run(_serve_until_killed(_egress_app(keys, twin_url)))
