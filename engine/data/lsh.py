"""MinHash signatures and LSH candidate pairs for near-duplicate search, on ``datasketch``.

Signatures are datasketch's ``affine32`` MinHash: each 32-bit shingle hash is mixed with the
MurmurHash3 finalizer, then permuted as ``a*h + b mod 2^32`` with the permutations datasketch
draws for :data:`SEED`. They are computed for many texts at once in numpy (a few uint32
operations per shingle and permutation, in cache-sized blocks) and equal what
``datasketch.MinHash(num_perm=NUM_PERM, seed=SEED, hashfunc=...).update_batch(...)`` gives, text
by text, at a small fraction of the cost.

Candidates come from :class:`datasketch.MinHashLSH` with bands chosen for recall
(:func:`lsh_params`) rather than datasketch's default balance of false positives and false
negatives: a missed pair lets a paraphrase straddle the train/test split, while an extra
candidate only costs an exact check. Long band-of-rows keys keep unrelated texts that share
boilerplate out of each other's buckets, which is what keeps the work about linear in the
number of texts; each candidate's MinHash estimate then screens it before the exact check.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import math
from collections.abc import Iterator, Sequence

import numpy as np
from datasketch import LeanMinHash, MinHash, MinHashLSH

from engine.data.progress import Progress

NUM_PERM = 256
"""MinHash permutations (signature length); a threshold's bands use a prefix of them."""
SEED = 20261125
"""Seed of datasketch's permutations: fixed, so signatures are the same in every process."""
SCHEME = "affine32"
"""datasketch's permutation scheme the signatures follow."""
RECALL = 0.999
"""Least probability that the bands make a pair *exactly at* the threshold a candidate. A pair
0.05 above it is missed about once in 20,000 (at 0.6), one 0.1 above once in a million."""
MARGIN = 0.15
"""Candidates whose MinHash estimate is this far below the threshold are not checked exactly.
The estimate's standard deviation is at most 0.5/sqrt(NUM_PERM) = 0.031, so this is ~5 sigma;
the coarse estimate from the first :data:`_COARSE` values (0.088) gets twice the margin."""
_COARSE = 32
_BLOCK = 4096  # shingles per block: a (NUM_PERM x block) uint32 matrix stays in cache
_INDEX_CELLS = 2_000_000  # texts x bands in one MinHashLSH: about 700 MB of Python sets and keys
_PAIRS = 50_000  # candidate pairs screened at once (bounds the pairs x NUM_PERM comparison)

_A, _B = (np.ascontiguousarray(p, np.uint32) for p in MinHash(num_perm=NUM_PERM, seed=SEED).permutations)


def fmix32(h: np.ndarray) -> np.ndarray:
    """The MurmurHash3 32-bit finalizer (datasketch's pre-mix of every input hash)."""
    h = h.astype(np.uint32)
    h ^= h >> np.uint32(16)
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> np.uint32(16)
    return h


def signatures(hashes: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """MinHash signatures of many texts at once.

    Args:
        hashes: every text's shingle hashes, concatenated (64-bit; the low 32 bits are used).
            Repeats within a text do not matter.
        starts: where each text's hashes begin in ``hashes`` (increasing; no text is empty).

    Returns:
        ``(len(starts), NUM_PERM)`` ``uint32``: row ``i`` is datasketch's ``affine32`` MinHash of
        text ``i``'s hashes.
    """
    n = len(starts)
    out = np.empty((n, NUM_PERM), dtype=np.uint32)
    x = fmix32(hashes)
    ends = np.append(starts[1:], len(x))
    buf = np.empty((NUM_PERM, _BLOCK), dtype=np.uint32)
    d = 0
    while d < n:
        # Whole texts whose shingles fit one block (at least one text, however long).
        e = max(d + 1, int(np.searchsorted(ends, starts[d] + _BLOCK, side="right")))
        lo, hi = int(starts[d]), int(ends[e - 1])
        v = buf[:, : hi - lo] if hi - lo <= _BLOCK else np.empty((NUM_PERM, hi - lo), dtype=np.uint32)
        np.multiply(_A[:, None], x[None, lo:hi], out=v)  # wraps mod 2^32: the permutation
        v += _B[:, None]
        out[d:e] = np.minimum.reduceat(v, starts[d:e] - lo, axis=1).T
        d = e
    return out


def lsh_params(threshold: float, num_perm: int = NUM_PERM) -> tuple[int, int]:
    """(bands, rows) for near-duplicates at ``threshold``: the longest bands (fewest candidates
    among dissimilar texts) for which at most ``num_perm`` values give :data:`RECALL`, with as
    few bands as that takes. At least two bands (datasketch's minimum)."""
    best = (num_perm, 1)  # a threshold too low for RECALL: the most bands there are
    for rows in range(1, num_perm // 2 + 1):
        p = threshold**rows
        bands = 2 if p >= 1 else max(2, math.ceil(math.log(1 - RECALL) / math.log1p(-p)))
        if bands * rows <= num_perm:
            best = (bands, rows)
    return best


def recall(similarity: float, threshold: float) -> float:
    """Probability that a pair of this Jaccard ``similarity`` shares a band at ``threshold``."""
    bands, rows = lsh_params(threshold)
    return 1 - (1 - similarity**rows) ** bands


def candidate_pairs(
    sigs: np.ndarray, threshold: float, progress: Progress | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs ``(i, j)``, ``i < j``, that share an LSH band and whose MinHash estimate is
    within :data:`MARGIN` of ``threshold``, without repeats, sorted.

    Bands are indexed a group at a time (each group one :class:`datasketch.MinHashLSH`), so
    memory stays bounded however many texts there are; each bucket's pairs are screened by
    their estimate as they come, so templated data (many weak candidates) never piles up.
    """
    n = len(sigs)
    bands, rows = lsh_params(threshold)
    n_groups = min(bands // 2, max(1, math.ceil(bands * n / _INDEX_CELLS)))
    coarse = np.ascontiguousarray(sigs[:, :_COARSE])
    found: list[np.ndarray] = []
    for g, group in enumerate(np.array_split(np.arange(bands), n_groups)):
        lo, hi = int(group[0]) * rows, (int(group[-1]) + 1) * rows
        part = np.ascontiguousarray(sigs[:, lo:hi])
        with _gc_paused():
            index = MinHashLSH(num_perm=hi - lo, params=(len(group), rows))
            for i in range(n):
                sketch = LeanMinHash(seed=SEED, hashvalues=part[i], scheme=SCHEME)
                index.insert(i, sketch, check_duplication=False)
            for table, counts in zip(index.hashtables, index.get_counts(), strict=True):
                buckets = [table.get(key) for key, count in counts.items() if count > 1]
                for x, y in _bucket_pairs(buckets):
                    found.append(_screen(x, y, sigs, coarse, threshold, n))
            # The index keeps a bound method of itself (a reference cycle), so only a full cyclic
            # collection would free its million sets, walking them all; emptying it frees them now.
            vars(index).clear()
        if progress:
            progress((g + 1) / n_groups, f"LSH: bands {hi // rows} of {bands}")
    if not found:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    codes = np.unique(np.concatenate(found))
    return codes // n, codes % n


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while an index lives: its million small sets hold no
    cycle, yet every full collection would walk them all again (it doubles, at 50,000 texts
    triples, the time the index takes)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _bucket_pairs(buckets: Sequence[set[int]]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Every pair within each bucket, as ``(smaller, larger)`` index arrays of at most about
    :data:`_PAIRS` pairs: buckets of one size at once, a huge bucket a few rows at a time."""
    by_size: dict[int, list[set[int]]] = {}
    for b in buckets:
        by_size.setdefault(len(b), []).append(b)
    for size, same in by_size.items():
        members = np.fromiter(itertools.chain.from_iterable(same), np.int64, size * len(same))
        members = np.sort(members.reshape(len(same), size), axis=1)  # (buckets, size)
        per_bucket = size * (size - 1) // 2
        if per_bucket <= _PAIRS:
            a, c = np.triu_indices(size, 1)
            step = max(1, _PAIRS // per_bucket)
            for k in range(0, len(members), step):
                m = members[k : k + step]
                yield m[:, a].ravel(), m[:, c].ravel()
        else:  # one bucket holds more pairs than a batch: a few rows of its triangle at a time
            for m in members:
                i0 = 0
                while i0 < size - 1:
                    i1, count = i0, 0
                    while i1 < size - 1 and (count == 0 or count + size - 1 - i1 <= _PAIRS):
                        count += size - 1 - i1  # row i pairs m[i] with every later member
                        i1 += 1
                    rows = np.arange(i0, i1)
                    yield np.repeat(m[rows], size - 1 - rows), np.concatenate([m[i + 1 :] for i in rows])
                    i0 = i1


def _screen(
    x: np.ndarray, y: np.ndarray, sigs: np.ndarray, coarse: np.ndarray, threshold: float, n: int
) -> np.ndarray:
    """Codes ``i * n + j`` of the pairs whose MinHash estimate is within :data:`MARGIN` of
    ``threshold``; a coarse estimate first discards most weak pairs for an eighth of the
    memory traffic."""
    rough = np.count_nonzero(coarse[x] == coarse[y], axis=1) >= (threshold - 2 * MARGIN) * _COARSE
    x, y = x[rough], y[rough]
    close = np.count_nonzero(sigs[x] == sigs[y], axis=1) >= (threshold - MARGIN) * sigs.shape[1]
    return x[close] * n + y[close]
