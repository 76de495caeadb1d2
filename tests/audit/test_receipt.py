"""Receipts and export bundles verify offline and reject every alteration."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audit.log import AuditLog
from gateway.audit.merkle import leaf_hash, range_proof
from gateway.audit.note import NoteSigner
from gateway.audit.receipt import (
    Bundle,
    Receipt,
    ReceiptError,
    verify_bundle,
    verify_receipt,
)
from gateway.audit.storage import LogReader
from tests.audit.conftest import ORIGIN, record


@pytest.fixture
async def receipt_json(tmp_path: Path, signer: NoteSigner) -> dict[str, Any]:
    log = await AuditLog.open(tmp_path, signer, origin=ORIGIN)
    try:
        for i in range(21):
            await log.append(record(i))
        await log.sync_checkpoint()
        return (await log.receipt(13)).to_json()
    finally:
        await log.close()


def test_receipt_verifies_from_its_json(receipt_json: dict[str, Any], signer: NoteSigner) -> None:
    text = json.dumps(receipt_json)
    receipt = Receipt.from_json(json.loads(text))
    checkpoint = verify_receipt(receipt, [signer.verifier])
    assert (checkpoint.origin, checkpoint.size) == (ORIGIN, 21)
    assert receipt_json["record"]["transfer_id"] == "t-13"
    assert receipt.leaf_hash == leaf_hash(receipt.record)


def altered(receipt_json: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    copy_ = copy.deepcopy(receipt_json)
    target = copy_
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return copy_


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("record", "decision"), "block", "does not hash"),
        (("index",), 12, "inclusion"),
        (("tree_size",), 20, "tree_size"),
        (("inclusion_proof", 0), "A" * 43 + "=", "inclusion"),
    ],
)
def test_altered_receipts_fail(
    receipt_json: dict[str, Any],
    signer: NoteSigner,
    path: tuple[Any, ...],
    value: Any,
    message: str,
) -> None:
    bad = altered(receipt_json, path, value)
    if path[0] == "record":  # a forger recomputes the leaf hash too: the proof stops them
        with pytest.raises(ReceiptError, match=message):
            verify_receipt(Receipt.from_json(bad), [signer.verifier])
        receipt = Receipt.from_json(bad)
        bad["leaf_hash"] = base64.b64encode(leaf_hash(receipt.record)).decode()
        message = "does not lead"
    with pytest.raises(ReceiptError, match=message):
        verify_receipt(Receipt.from_json(bad), [signer.verifier])


def test_receipt_needs_the_right_key_and_a_checkpoint(
    receipt_json: dict[str, Any], signer: NoteSigner
) -> None:
    stranger = NoteSigner(ORIGIN, Ed25519PrivateKey.generate())
    with pytest.raises(ReceiptError, match="trusted"):
        verify_receipt(Receipt.from_json(receipt_json), [stranger.verifier])
    pending = dict(receipt_json, tree_size=None, inclusion_proof=None, checkpoint=None)
    with pytest.raises(ReceiptError, match="no inclusion proof yet"):
        verify_receipt(Receipt.from_json(pending), [signer.verifier])
    with pytest.raises(ReceiptError, match="go together"):
        Receipt.from_json(dict(receipt_json, checkpoint=None))
    with pytest.raises(ReceiptError, match="format"):
        Receipt.from_json({"index": 1})


async def test_bundles_prove_completeness(tmp_path: Path, signer: NoteSigner) -> None:
    log = await AuditLog.open(tmp_path, signer, origin=ORIGIN)
    for i in range(45):
        await log.append(record(i))
    await log.close()
    reader = LogReader(tmp_path)
    latest = reader.latest_checkpoint()
    assert latest is not None
    note = latest.note
    start, end = 11, 30
    records = tuple(reader.record(i) for i in range(start, end))
    left, right = range_proof(start, end, 45, reader.subtree)
    bundle = Bundle(start, records, tuple(left), tuple(right), note)
    again = Bundle.from_json(json.loads(json.dumps(bundle.to_json())))
    assert again == bundle
    assert verify_bundle(again, [signer.verifier]).size == 45
    for bad in (
        records[:5] + records[6:],
        (*records[:5], records[6], records[5], *records[7:]),
        (*records[:5], reader.record(40), *records[6:]),
    ):
        with pytest.raises(ReceiptError, match=r"records 11\.\."):
            verify_bundle(Bundle(start, bad, tuple(left), tuple(right), note), [signer.verifier])
    stranger = NoteSigner(ORIGIN, Ed25519PrivateKey.generate())
    with pytest.raises(ReceiptError, match="trusted"):
        verify_bundle(bundle, [stranger.verifier])
