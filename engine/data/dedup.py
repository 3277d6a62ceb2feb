"""Exact and near-duplicate detection: MinHash over character shingles, verified exactly.

Similarity between two texts is the Jaccard index of their sets of character 5-grams after
:func:`normalize_text` (case, quotes, dashes, punctuation and spacing do not count). It is
lexical: it catches copies, light edits and reworded paraphrases that keep most of the
wording, not a rephrasing with entirely different words (that needs sentence embeddings).

Finding every pair above a threshold among *n* texts is done with MinHash signatures and
locality-sensitive hashing (banding) to find candidates in about linear time, then the exact
Jaccard of each candidate pair decides, so the reported similarities are exact and the
threshold means what it says. Identical normalised texts are always grouped.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np

SHINGLE = 5
"""Characters per shingle."""
NUM_PERM = 128
"""MinHash permutations (signature length)."""
DEFAULT_THRESHOLD = 0.6
"""Similarity at or above which two texts count as near-duplicates unless the caller says.

Generous on purpose: it decides which prompts must stay on one side of a train/test split,
where grouping two merely similar prompts costs nothing. Unrelated prompts score below 0.1;
light paraphrases of a 20-word prompt score 0.6-0.9. Dropping rows (the ``near_dedup``
cleaning rule) defaults to a stricter 0.8."""

# Multiply-shift hashing (a*h + b mod 2^64, top 32 bits): no modulo, one numpy pass.
_rng = np.random.default_rng(20261125)  # fixed: signatures are reproducible across processes
_A = _rng.integers(1, 2**63, NUM_PERM, dtype=np.uint64) | np.uint64(1)
_B = _rng.integers(0, 2**63, NUM_PERM, dtype=np.uint64)
_MIX = _rng.integers(1, 2**63, NUM_PERM, dtype=np.uint64) | np.uint64(1)
# Candidates whose MinHash estimate is this far below the threshold are not checked exactly.
# The estimate's standard deviation is at most 0.5/sqrt(NUM_PERM) = 0.044, so 0.15 is > 3 sigma;
# the coarse 32-value estimate (0.088) gets twice the margin.
_ESTIMATE_MARGIN = 0.15
_PUNCT = re.compile(r"[^\w\s]+")
_TRANSLATE = str.maketrans({"‘": "'", "’": "'", "“": '"', "”": '"', "–": "-", "—": "-"})


def normalize_text(text: str) -> str:
    """Canonical form for comparison: NFKC, case-folded, punctuation removed, spaces collapsed."""
    text = unicodedata.normalize("NFKC", text).translate(_TRANSLATE).casefold()
    return " ".join(_PUNCT.sub(" ", text).split())


def shingles(text: str, k: int = SHINGLE) -> set[str]:
    """The set of character ``k``-grams of the normalised text (the whole text if shorter)."""
    norm = normalize_text(text)
    if len(norm) <= k:
        return {norm}
    return {norm[i : i + k] for i in range(len(norm) - k + 1)}


def shingle_hashes(text: str, k: int = SHINGLE) -> np.ndarray:
    """Sorted unique 64-bit hashes of :func:`shingles` (computed in numpy, not per shingle)."""
    norm = normalize_text(text)
    codes = np.frombuffer(norm.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    if len(codes) <= k:
        codes = np.pad(codes, (0, k - len(codes))) if len(codes) else np.zeros(k, np.uint64)
        n = 1
    else:
        n = len(codes) - k + 1
    h = np.zeros(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(k):  # polynomial hash of each window, wrapping at 2^64
            h = h * np.uint64(1_000_003) + codes[j : j + n]
        h ^= h >> np.uint64(29)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(32)
    return _distinct(h)


def _distinct(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values (``np.unique`` without its hash-table path, slow on big int arrays)."""
    values = np.sort(values)
    return values[np.concatenate(([True], values[1:] != values[:-1]))] if len(values) else values


def jaccard(a: np.ndarray | set[str], b: np.ndarray | set[str]) -> float:
    """``|a ∩ b| / |a ∪ b|`` of two sets, or of two sorted unique hash arrays (1.0 if both empty)."""
    if isinstance(a, set) and isinstance(b, set):
        inter, union = len(a & b), len(a | b)
    else:
        inter = len(np.intersect1d(a, b, assume_unique=True))  # type: ignore[arg-type]
        union = len(a) + len(b) - inter
    return inter / union if union else 1.0


def similarity(a: str, b: str) -> float:
    """Near-duplicate similarity of two texts in [0, 1] (see the module docstring)."""
    return jaccard(shingle_hashes(a), shingle_hashes(b))


def minhash_signatures(hashes: Sequence[np.ndarray]) -> np.ndarray:
    """MinHash signatures (``uint32``), one row of :data:`NUM_PERM` values per hash array."""
    sigs = np.zeros((len(hashes), NUM_PERM), dtype=np.uint32)
    # Documents are processed in chunks that bound the (permutations x shingles) matrix.
    start = 0
    with np.errstate(over="ignore"):
        while start < len(hashes):
            stop, total = start, 0
            while stop < len(hashes) and (total < 50_000 or stop == start):
                total += len(hashes[stop])
                stop += 1
            h = np.concatenate(hashes[start:stop])
            values = (_A[:, None] * h[None, :] + _B[:, None]) >> np.uint64(32)
            offsets = np.cumsum([0] + [len(x) for x in hashes[start : stop - 1]])
            sigs[start:stop] = np.minimum.reduceat(values, offsets, axis=1).T
            start = stop
    return sigs


def _bands_for(threshold: float) -> tuple[int, int]:
    """(bands, rows) whose LSH S-curve passes a pair of Jaccard ``threshold`` with high
    probability: the curve's midpoint sits well below the threshold, trading extra candidates
    (checked exactly afterwards) for recall."""
    target = max(0.05, threshold - 0.2)
    best = (NUM_PERM, 1)
    for rows in range(1, NUM_PERM + 1):
        bands = NUM_PERM // rows
        if (1 / bands) ** (1 / rows) > target:
            break
        best = (bands, rows)
    return best


def _candidate_pairs(sigs: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs ``(i, j)``, ``i < j``, that share an LSH band and whose MinHash estimate is
    within :data:`_ESTIMATE_MARGIN` of ``threshold``, without repeats.

    Screening each band's pairs by their estimate at once keeps templated data (millions of
    weak candidates) from piling up in memory or reaching the exact check.
    """
    n = len(sigs)
    bands, rows = _bands_for(threshold)
    found = []
    coarse = np.ascontiguousarray(sigs[:, :32])
    with np.errstate(over="ignore"):
        for b in range(bands):
            # One 64-bit key per band; a rare collision only adds a candidate checked later.
            keys = (sigs[:, b * rows : (b + 1) * rows].astype(np.uint64) * _MIX[:rows]).sum(axis=1)
            order = np.argsort(keys, kind="stable")
            sorted_keys = keys[order]
            starts = np.flatnonzero(np.concatenate(([True], sorted_keys[1:] != sorted_keys[:-1])))
            sizes = np.diff(np.append(starts, n))
            # All buckets of one size at once: a few numpy operations per band, not one per bucket.
            for size in np.unique(sizes[sizes > 1]).tolist():
                a, c = np.triu_indices(size, 1)
                first = starts[sizes == size][:, None]
                x, y = order[first + a].ravel(), order[first + c].ravel()
                x, y = np.minimum(x, y), np.maximum(x, y)
                for k in range(0, len(x), 200_000):  # bounds the (pairs x NUM_PERM) comparison
                    xs, ys = x[k : k + 200_000], y[k : k + 200_000]
                    # A coarse estimate from 32 values discards most weak pairs for a quarter
                    # of the memory traffic; survivors get the full 128-value estimate.
                    rough = (coarse[xs] == coarse[ys]).mean(axis=1) >= threshold - 2 * _ESTIMATE_MARGIN
                    xs, ys = xs[rough], ys[rough]
                    plausible = (sigs[xs] == sigs[ys]).mean(axis=1) >= threshold - _ESTIMATE_MARGIN
                    found.append(xs[plausible].astype(np.int64) * n + ys[plausible])
    codes = _distinct(np.concatenate(found)) if found else np.zeros(0, dtype=np.int64)
    return codes // n, codes % n


def _linked(texts: Sequence[str], threshold: float) -> tuple[list[int], dict[tuple[int, int], float]]:
    """Each text's representative (the first text with the same normalised form) and the
    near-duplicate pairs among representatives with their exact similarity.

    Identical (normalised) texts share one representative, so a template repeated 1,000 times
    does not fill an LSH bucket with half a million candidate pairs.
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    first: dict[str, int] = {}
    rep = [first.setdefault(normalize_text(t), i) for i, t in enumerate(texts)]
    uniq = sorted(first.values())
    hashes = [shingle_hashes(texts[i]) for i in uniq]
    linked: dict[tuple[int, int], float] = {}
    if len(uniq) > 1:
        sigs = minhash_signatures(hashes)
        left, right = _candidate_pairs(sigs, threshold)
        for a, b in zip(left.tolist(), right.tolist(), strict=True):
            sim = jaccard(hashes[a], hashes[b])
            if sim >= threshold:
                linked[(uniq[a], uniq[b])] = sim
    return rep, linked


def near_duplicate_pairs(
    texts: Sequence[str], threshold: float = DEFAULT_THRESHOLD
) -> list[tuple[int, int, float]]:
    """Every pair of texts whose :func:`similarity` is at least ``threshold``.

    Identical texts are paired with each other too, so ``k`` copies give ``k(k-1)/2`` pairs;
    use :func:`near_duplicate_groups` when only the groups matter.

    Args:
        texts: the texts.
        threshold: minimum similarity in (0, 1].

    Returns:
        ``(i, j, similarity)`` with ``i < j``, sorted.
    """
    rep, linked = _linked(texts, threshold)
    members: dict[int, list[int]] = {}
    for i, r in enumerate(rep):
        members.setdefault(r, []).append(i)
    out = {pair: 1.0 for m in members.values() for pair in combinations(m, 2)}
    for (a, b), sim in linked.items():
        for x in members[a]:
            for y in members[b]:
                out[(min(x, y), max(x, y))] = sim
    return sorted((i, j, s) for (i, j), s in out.items())


def group_pairs(n: int, pairs: Iterable[tuple[int, int, float]]) -> list[list[int]]:
    """Connected components (size >= 2) of the graph whose edges are ``pairs``, each sorted,
    ordered by their first member."""
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j, _ in pairs:
        ri, rj = find(i), find(j)
        if ri != rj:
            parent[max(ri, rj)] = min(ri, rj)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return sorted((g for g in groups.values() if len(g) > 1), key=lambda g: g[0])


def near_duplicate_groups(texts: Sequence[str], threshold: float = DEFAULT_THRESHOLD) -> list[list[int]]:
    """Groups of indices of texts that are near-duplicates of each other (transitively).

    Args:
        texts: the texts.
        threshold: minimum :func:`similarity` for two texts to be linked.

    Returns:
        Groups of two or more indices, each sorted, ordered by their first index.
    """
    rep, linked = _linked(texts, threshold)
    edges = [(i, r, 1.0) for i, r in enumerate(rep) if i != r]
    edges += [(a, b, s) for (a, b), s in linked.items()]
    return group_pairs(len(texts), edges)


def exact_duplicate_groups(texts: Sequence[str]) -> list[list[int]]:
    """Groups of indices whose texts are identical after :func:`normalize_text`."""
    by_text: dict[str, list[int]] = {}
    for i, t in enumerate(texts):
        by_text.setdefault(normalize_text(t), []).append(i)
    return sorted((g for g in by_text.values() if len(g) > 1), key=lambda g: g[0])


@dataclass(frozen=True)
class Leak:
    """A test text that duplicates or nearly duplicates a training text.

    Attributes:
        test_index: position of the text in the test texts.
        train_index: position of its most similar training text.
        similarity: their :func:`similarity`.
    """

    test_index: int
    train_index: int
    similarity: float


def check_no_leak(
    train_texts: Sequence[str], test_texts: Sequence[str], threshold: float = DEFAULT_THRESHOLD
) -> list[Leak]:
    """Find test texts that duplicate or nearly duplicate any training text.

    Args:
        train_texts: the texts a model is trained on.
        test_texts: the held-out texts.
        threshold: minimum :func:`similarity` that counts as a leak.

    Returns:
        One :class:`Leak` per leaking test text (with its most similar training text), sorted
        by test index; an empty list means no test text is within ``threshold`` of training.
    """
    n = len(train_texts)
    rep, linked = _linked([*train_texts, *test_texts], threshold)
    first_train: dict[int, int] = {}
    for i in range(n):
        first_train.setdefault(rep[i], i)
    best: dict[int, tuple[float, int]] = {}

    def offer(test: int, train: int, sim: float) -> None:
        if test not in best or (sim, -train) > (best[test][0], -best[test][1]):
            best[test] = (sim, train)

    for j in range(n, len(rep)):
        if rep[j] in first_train:
            offer(j - n, first_train[rep[j]], 1.0)
    # Near-duplicate links between representatives reach every copy of either side.
    members: dict[int, list[int]] = {}
    for i, r in enumerate(rep):
        members.setdefault(r, []).append(i)
    for (a, b), sim in linked.items():
        for x, y in ((a, b), (b, a)):
            train = first_train.get(x)
            if train is not None:
                for j in members[y]:
                    if j >= n:
                        offer(j - n, train, sim)
    return [Leak(t, tr, s) for t, (s, tr) in sorted(best.items())]
