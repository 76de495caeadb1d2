"""RFC 6962 / RFC 9162 Merkle tree hashing, proofs and their verifiers (no I/O).

The audit log's records are the leaves of the tree defined in RFC 9162 §2.1.1:
``leaf = SHA-256(0x00 || record)``, ``node = SHA-256(0x01 || left || right)``,
and the root of ``n`` leaves splits at the largest power of two below ``n``.
Because that split always puts a *perfect* (power-of-two, aligned) subtree on
the left, every hash a proof needs can be assembled from perfect subtree
hashes. The storage layer keeps exactly those on disk (one file per level),
and hands them to this module through a :data:`SubtreeSource`, so proofs cost
O(log² n) reads and never load the leaves.

The tree state needed to append is the *compact range* (the right edge of the
tree: one perfect subtree hash per set bit of the size), so appends are
O(log n) time and the state is O(log n) memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence

#: RFC 9162 §2.1.1 domain-separation prefixes for leaves and interior nodes.
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
#: SHA-256 output size; every hash in the tree has this length.
HASH_SIZE = 32
#: MTH({}) = SHA-256() (RFC 9162 §2.1.1): the root of the empty tree.
EMPTY_ROOT = hashlib.sha256(b"").digest()
#: Tree sizes are unsigned 64-bit integers in RFC 9162 and C2SP tlog-checkpoint.
MAX_TREE_SIZE = 2**64 - 1

#: ``source(level, index)`` returns the hash of the perfect subtree covering
#: leaves ``[index * 2**level, (index + 1) * 2**level)``; level 0 is a leaf hash.
SubtreeSource = Callable[[int, int], bytes]


class ProofError(ValueError):
    """A proof does not verify, or its parameters are impossible."""


def leaf_hash(record: bytes) -> bytes:
    """The RFC 9162 leaf hash of one record's bytes."""
    return hashlib.sha256(LEAF_PREFIX + record).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The RFC 9162 interior node hash of two child hashes."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (``n >= 2``)."""
    return 1 << ((n - 1).bit_length() - 1)


def perfect_subtrees(start: int, end: int) -> list[tuple[int, int]]:
    """Decompose ``[start, end)`` into maximal aligned perfect subtrees, left to right.

    This is the "compact range" decomposition of transparency-dev: each
    ``(level, index)`` covers ``[index << level, (index + 1) << level)``.
    For ``start == 0`` it is the right edge of a tree of size ``end``.
    """
    if not 0 <= start <= end:
        raise ValueError(f"invalid range [{start}, {end})")
    nodes: list[tuple[int, int]] = []
    pos = start
    while pos < end:
        # The largest level at which pos is aligned and the subtree still fits.
        level = (pos & -pos).bit_length() - 1 if pos else (end - pos).bit_length() - 1
        while pos + (1 << level) > end:
            level -= 1
        nodes.append((level, pos >> level))
        pos += 1 << level
    return nodes


class CompactRange:
    """The right edge of a Merkle tree of ``size`` leaves: enough to append and to hash.

    ``hashes[i]`` is the perfect subtree for the i-th set bit of ``size``,
    from the most significant bit (leftmost subtree) down.

    Args:
        size: number of leaves already in the tree.
        hashes: the right-edge hashes for that size (``size.bit_count()`` of them).
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self, size: int = 0, hashes: Sequence[bytes] = ()) -> None:
        if size < 0 or size.bit_count() != len(hashes):
            raise ValueError(f"a tree of size {size} has {size.bit_count()} edge hashes")
        self._size = size
        self._hashes = list(hashes)

    @classmethod
    def from_source(cls, size: int, source: SubtreeSource) -> CompactRange:
        """Rebuild the right edge of a tree of ``size`` leaves from stored subtrees."""
        return cls(size, [source(level, index) for level, index in perfect_subtrees(0, size)])

    @property
    def size(self) -> int:
        """Number of leaves appended so far."""
        return self._size

    @property
    def hashes(self) -> tuple[bytes, ...]:
        """The right-edge hashes, leftmost (largest) subtree first."""
        return tuple(self._hashes)

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Append one leaf hash.

        Returns:
            Every perfect subtree completed by this leaf as ``(level, index,
            hash)``, lowest level first (the leaf itself is level 0), which
            is what the storage appends to its per-level files.
        """
        if self._size >= MAX_TREE_SIZE:
            raise ValueError("tree size would exceed 2**64 - 1")
        index = self._size
        completed = [(0, index, leaf)]
        current = leaf
        level = 0
        # Each trailing one bit of the old size is a left sibling waiting for us.
        while (index >> level) & 1:
            current = node_hash(self._hashes.pop(), current)
            level += 1
            completed.append((level, index >> level, current))
        self._hashes.append(current)
        self._size += 1
        return completed

    def root(self) -> bytes:
        """MTH of the whole tree (RFC 9162 §2.1.1)."""
        if not self._hashes:
            return EMPTY_ROOT
        root = self._hashes[-1]
        for left in reversed(self._hashes[:-1]):
            root = node_hash(left, root)
        return root

    def copy(self) -> CompactRange:
        """An independent copy (appends to it do not affect this range)."""
        return CompactRange(self._size, self._hashes)


def subtree_hash(source: SubtreeSource, start: int, n: int) -> bytes:
    """MTH of leaves ``[start, start + n)`` as RFC 9162 defines it, from stored subtrees.

    ``start`` must be aligned the way RFC 9162's recursion produces ranges:
    a multiple of the largest power of two not exceeding ``n``.
    """
    if n <= 0:
        raise ValueError("an empty range has no subtree hash")
    if n & (n - 1) == 0:
        level = n.bit_length() - 1
        if start % n:
            raise ValueError(f"range [{start}, {start + n}) is not an aligned subtree")
        return source(level, start >> level)
    k = _split(n)
    return node_hash(subtree_hash(source, start, k), subtree_hash(source, start + k, n - k))


def root_hash(source: SubtreeSource, size: int) -> bytes:
    """MTH of the first ``size`` leaves."""
    if size == 0:
        return EMPTY_ROOT
    return subtree_hash(source, 0, size)


def inclusion_proof(index: int, size: int, source: SubtreeSource) -> list[bytes]:
    """PATH(index, D[size]) of RFC 9162 §2.1.3.1, leaf-side first."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of size {size}")
    proof: list[bytes] = []
    start, n, m = 0, size, index
    while n > 1:
        k = _split(n)
        if m < k:
            proof.append(subtree_hash(source, start + k, n - k))
            n = k
        else:
            proof.append(subtree_hash(source, start, k))
            start, n, m = start + k, n - k, m - k
    proof.reverse()
    return proof


def consistency_proof(old_size: int, new_size: int, source: SubtreeSource) -> list[bytes]:
    """PROOF(old_size, D[new_size]) of RFC 9162 §2.1.4.1."""
    if not 0 <= old_size <= new_size:
        raise ValueError(f"no consistency proof from size {old_size} to {new_size}")
    if old_size in (0, new_size):
        return []
    proof: list[bytes] = []
    start, n, m, complete = 0, new_size, old_size, True
    while m != n:
        k = _split(n)
        if m <= k:
            proof.append(subtree_hash(source, start + k, n - k))
            n = k
        else:
            proof.append(subtree_hash(source, start, k))
            start, n, m, complete = start + k, n - k, m - k, False
    if not complete:
        proof.append(subtree_hash(source, start, m))
    proof.reverse()
    return proof


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Verify an inclusion proof (RFC 9162 §2.1.3.2).

    Raises:
        ProofError: the proof does not lead from ``leaf`` to ``root``.
    """
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofError("inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is shorter than the tree is deep")
    if r != root:
        raise ProofError("inclusion proof does not lead to the checkpoint's root hash")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Verify a consistency proof (RFC 9162 §2.1.4.2).

    Raises:
        ProofError: the tree of ``new_size`` does not extend the one of ``old_size``.
    """
    if not 0 <= old_size <= new_size:
        raise ProofError(f"size went backwards from {old_size} to {new_size}")
    if old_size == new_size:
        if proof:
            raise ProofError("a consistency proof between equal sizes must be empty")
        if old_root != new_root:
            raise ProofError(f"two different root hashes for tree size {old_size}")
        return
    if old_size == 0:
        if proof:
            raise ProofError("a consistency proof from the empty tree must be empty")
        return
    if not proof:
        raise ProofError("empty consistency proof")
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is too short")
    if fr != old_root:
        raise ProofError("consistency proof does not reproduce the older root hash")
    if sr != new_root:
        raise ProofError("consistency proof does not reproduce the newer root hash")


def range_proof(
    start: int, end: int, size: int, source: SubtreeSource
) -> tuple[list[bytes], list[bytes]]:
    """The hashes that, with leaves ``[start, end)``, reproduce the root of ``size`` leaves.

    Returns:
        ``(left, right)``: the perfect subtrees covering ``[0, start)`` and
        ``[end, size)`` (compact ranges, left to right). Together with the
        leaves they prove that the leaves are exactly positions
        ``start..end-1`` of the tree, so nothing in between was omitted.
    """
    if not 0 <= start <= end <= size:
        raise ValueError(f"invalid range [{start}, {end}) for a tree of size {size}")
    left = [source(level, index) for level, index in perfect_subtrees(0, start)]
    right = [source(level, index) for level, index in perfect_subtrees(end, size)]
    return left, right


def verify_range(
    start: int,
    leaves: Iterable[bytes],
    left: Sequence[bytes],
    right: Sequence[bytes],
    size: int,
    root: bytes,
) -> int:
    """Verify that ``leaves`` are exactly positions ``start, start+1, …`` of a tree.

    Returns:
        the end of the range (``start`` + number of leaves).

    Raises:
        ProofError: the leaves and edge hashes do not reproduce ``root``.
    """
    if len(left) != start.bit_count():
        raise ProofError(f"a range starting at {start} needs {start.bit_count()} left hashes")
    tree = CompactRange(start, left)
    for leaf in leaves:
        tree.append(leaf)
    end = tree.size
    if end > size:
        raise ProofError(f"range ends at {end}, beyond the tree size {size}")
    expected = perfect_subtrees(end, size)
    if len(right) != len(expected):
        raise ProofError(f"a range ending at {end} needs {len(expected)} right hashes")
    stack = list(tree.hashes)
    levels = [level for level, _ in perfect_subtrees(0, end)]
    for (level, _), node in zip(expected, right, strict=True):
        # Appending an aligned subtree is binary addition: each equal-level top
        # of the stack is this node's left sibling (a carry).
        while levels and levels[-1] == level:
            node = node_hash(stack.pop(), node)
            levels.pop()
            level += 1
        stack.append(node)
        levels.append(level)
    computed = CompactRange(size, stack).root()
    if computed != root:
        raise ProofError("records and edge hashes do not reproduce the checkpoint's root hash")
    return end
