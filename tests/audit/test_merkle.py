"""RFC 6962/9162 tree hashing and proofs against an independent reference."""

from __future__ import annotations

import hashlib
from functools import cache

import pytest

from gateway.audit.merkle import (
    EMPTY_ROOT,
    CompactRange,
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    perfect_subtrees,
    range_proof,
    root_hash,
    verify_consistency,
    verify_inclusion,
    verify_range,
)

MAX_SIZE = 300


# -- an independent reference, written straight from RFC 9162 §2.1 ----------------


def ref_leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def ref_node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


LEAF_DATA = [f"record {i}".encode() for i in range(MAX_SIZE)]
LEAVES = [ref_leaf(d) for d in LEAF_DATA]


def split_point(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


@cache
def ref_mth(start: int, n: int) -> bytes:
    """MTH(D[start:start+n]) by the RFC's recursive definition."""
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return LEAVES[start]
    k = split_point(n)
    return ref_node(ref_mth(start, k), ref_mth(start + k, n - k))


def ref_path(m: int, start: int, n: int) -> list[bytes]:
    """PATH(m, D[start:start+n]) of RFC 9162 §2.1.3.1."""
    if n == 1:
        return []
    k = split_point(n)
    if m < k:
        return [*ref_path(m, start, k), ref_mth(start + k, n - k)]
    return [*ref_path(m - k, start + k, n - k), ref_mth(start, k)]


def ref_subproof(m: int, start: int, n: int, complete: bool) -> list[bytes]:
    """SUBPROOF(m, D[start:start+n], b) of RFC 9162 §2.1.4.1."""
    if m == n:
        return [] if complete else [ref_mth(start, n)]
    k = split_point(n)
    if m <= k:
        return [*ref_subproof(m, start, k, complete), ref_mth(start + k, n - k)]
    return [*ref_subproof(m - k, start + k, n - k, False), ref_mth(start, k)]


class MemoryTree:
    """Perfect-subtree hashes in lists, the in-memory twin of the index files."""

    def __init__(self, leaves: list[bytes]) -> None:
        tree = CompactRange()
        self.levels: list[list[bytes]] = []
        for leaf in leaves:
            for level, index, value in tree.append(leaf):
                while len(self.levels) <= level:
                    self.levels.append([])
                assert len(self.levels[level]) == index
                self.levels[level].append(value)
        self.tree = tree

    def source(self, level: int, index: int) -> bytes:
        return self.levels[level][index]


FULL = MemoryTree(LEAVES)

# -- known answers --------------------------------------------------------------------

# The certificate-transparency / transparency-dev test leaves and their roots.
CT_LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    bytes(range(0x60, 0x70)),
]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def test_empty_tree_root_is_sha256_of_nothing() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert CompactRange().root() == EMPTY_ROOT


@pytest.mark.parametrize("size", range(1, len(CT_LEAVES) + 1))
def test_known_answer_roots(size: int) -> None:
    tree = CompactRange()
    for data in CT_LEAVES[:size]:
        tree.append(leaf_hash(data))
    assert tree.root().hex() == CT_ROOTS[size - 1]


def test_leaf_and_node_domain_separation() -> None:
    assert leaf_hash(b"abc") == hashlib.sha256(b"\x00abc").digest()
    # A leaf whose bytes look like two hashes must not collide with their node.
    a, b = LEAVES[0], LEAVES[1]
    assert leaf_hash(a + b) != ref_node(a, b)


def test_compact_range_root_matches_reference_for_every_size() -> None:
    tree = CompactRange()
    for n in range(1, MAX_SIZE + 1):
        tree.append(LEAVES[n - 1])
        assert tree.root() == ref_mth(0, n), n
        assert len(tree.hashes) == n.bit_count()  # O(log n) state


def test_compact_range_rebuilds_from_stored_subtrees() -> None:
    for n in (0, 1, 2, 3, 7, 8, 100, 255, 256, 300):
        rebuilt = CompactRange.from_source(n, FULL.source)
        assert rebuilt.root() == ref_mth(0, n)
        assert root_hash(FULL.source, n) == ref_mth(0, n)


def test_perfect_subtrees_cover_a_range_exactly() -> None:
    for start in range(0, 40):
        for end in range(start, 70):
            covered: list[int] = []
            for level, index in perfect_subtrees(start, end):
                covered.extend(range(index << level, (index + 1) << level))
            assert covered == list(range(start, end))


# -- proofs for every size up to 300 ------------------------------------------------------


def test_inclusion_proofs_every_leaf_every_size() -> None:
    for n in range(1, MAX_SIZE + 1):
        root = ref_mth(0, n)
        for m in range(n):
            proof = inclusion_proof(m, n, FULL.source)
            assert proof == ref_path(m, 0, n)
            verify_inclusion(m, n, LEAVES[m], proof, root)


def test_consistency_proofs_every_pair_of_sizes() -> None:
    for n in range(1, MAX_SIZE + 1):
        new_root = ref_mth(0, n)
        for m in range(0, n + 1):
            proof = consistency_proof(m, n, FULL.source)
            expected = [] if m in (0, n) else ref_subproof(m, 0, n, True)
            assert proof == expected
            verify_consistency(m, n, ref_mth(0, m), new_root, proof)


@pytest.mark.parametrize(("m", "n"), [(0, 1), (3, 7), (4, 8), (5, 300), (255, 256), (299, 300)])
def test_inclusion_proof_rejects_every_kind_of_lie(m: int, n: int) -> None:
    root = ref_mth(0, n)
    proof = inclusion_proof(m, n, FULL.source)
    with pytest.raises(ProofError):
        verify_inclusion(m, n, LEAVES[m + 1] if m + 1 < MAX_SIZE else LEAVES[0], proof, root)
    with pytest.raises(ProofError):
        verify_inclusion(m, n, LEAVES[m], proof, ref_mth(0, n - 1) if n > 1 else LEAVES[5])
    with pytest.raises(ProofError):
        verify_inclusion(m, n, LEAVES[m], [*proof, LEAVES[0]], root)
    if proof:
        with pytest.raises(ProofError):
            verify_inclusion(m, n, LEAVES[m], proof[:-1], root)
        flipped = bytes([proof[0][0] ^ 1]) + proof[0][1:]
        with pytest.raises(ProofError):
            verify_inclusion(m, n, LEAVES[m], [flipped, *proof[1:]], root)
    if n > 1:
        with pytest.raises(ProofError):
            verify_inclusion((m + 1) % n, n, LEAVES[m], proof, root)
    with pytest.raises(ProofError):
        verify_inclusion(n, n, LEAVES[m], proof, root)


@pytest.mark.parametrize(("m", "n"), [(1, 2), (3, 7), (4, 8), (6, 8), (100, 300), (256, 257)])
def test_consistency_proof_rejects_every_kind_of_lie(m: int, n: int) -> None:
    old, new = ref_mth(0, m), ref_mth(0, n)
    proof = consistency_proof(m, n, FULL.source)
    verify_consistency(m, n, old, new, proof)
    with pytest.raises(ProofError):
        verify_consistency(m, n, ref_mth(0, m - 1), new, proof)
    with pytest.raises(ProofError):
        verify_consistency(m, n, old, ref_mth(0, n - 1), proof)
    with pytest.raises(ProofError):
        verify_consistency(m, n, old, new, proof[:-1])
    with pytest.raises(ProofError):
        verify_consistency(m, n, old, new, [*proof, LEAVES[0]])
    with pytest.raises(ProofError):
        verify_consistency(n, m, new, old, proof)
    with pytest.raises(ProofError):
        verify_consistency(m, m, old, new, [])


def test_range_proofs_reproduce_the_root() -> None:
    for n in (1, 2, 5, 8, 13, 64, 100, 300):
        root = ref_mth(0, n)
        for start in range(0, n + 1, max(1, n // 9)):
            for end in range(start, n + 1, max(1, n // 7)):
                left, right = range_proof(start, end, n, FULL.source)
                assert verify_range(start, LEAVES[start:end], left, right, n, root) == end


def test_range_proof_detects_omission_reordering_and_edits() -> None:
    n, start, end = 100, 10, 30
    root = ref_mth(0, n)
    left, right = range_proof(start, end, n, FULL.source)
    leaves = LEAVES[start:end]
    for bad in (
        leaves[:5] + leaves[6:],  # one record left out
        [*leaves[:5], leaves[6], leaves[5], *leaves[7:]],  # two swapped
        [*leaves[:5], LEAVES[99], *leaves[6:]],  # one replaced
        [*leaves, LEAVES[30]],  # range claimed longer than the proof
    ):
        with pytest.raises(ProofError):
            verify_range(start, bad, left, right, n, root)
    with pytest.raises(ProofError):
        verify_range(start + 1, leaves, left, right, n, root)
