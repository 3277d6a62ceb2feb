"""Exact and near-duplicate detection: MinHash LSH over character shingles, verified exactly.

Similarity between two texts is the Jaccard index of their sets of character 5-grams after
:func:`normalize_text` (case, quotes, dashes, punctuation and spacing do not count). It is
lexical: it catches copies, light edits and reworded paraphrases that keep most of the
wording, not a rephrasing with entirely different words (that needs sentence embeddings).

Finding every pair above a threshold among *n* texts takes MinHash signatures and
``datasketch``'s LSH index (:mod:`engine.data.lsh`) to find candidates in about linear time,
then the exact Jaccard of each candidate pair decides, so the reported similarities are exact
and the threshold means what it says. The bands are chosen so that a pair at the threshold
is a candidate with probability at least :data:`engine.data.lsh.RECALL` (a pair a little above
it, nearly always). Identical normalised texts are always grouped.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from engine.data import lsh
from engine.data.lsh import NUM_PERM
from engine.data.progress import Progress, span

__all__ = [
    "DEFAULT_THRESHOLD",
    "NUM_PERM",
    "SHINGLE",
    "Leak",
    "check_no_leak",
    "exact_duplicate_groups",
    "group_pairs",
    "jaccard",
    "minhash_signatures",
    "near_duplicate_groups",
    "near_duplicate_pairs",
    "normalize_text",
    "shingle_hashes",
    "shingles",
    "similarity",
]

SHINGLE = 5
"""Characters per shingle."""
DEFAULT_THRESHOLD = 0.6
"""Similarity at or above which two texts count as near-duplicates unless the caller says.

Generous on purpose: it decides which prompts must stay on one side of a train/test split,
where grouping two merely similar prompts costs nothing. Unrelated prompts score below 0.1;
light paraphrases of a 20-word prompt score 0.6-0.9. Dropping rows (the ``near_dedup``
cleaning rule) defaults to a stricter 0.8."""

_PUNCT = re.compile(r"[^\w\s]+")
_TRANSLATE = str.maketrans({"‘": "'", "’": "'", "“": '"', "”": '"', "–": "-", "—": "-"})
_BATCH = 2000  # texts hashed and signed at once (bounds the shingle arrays)


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
    return _distinct(_window_hashes([normalize_text(text)], k)[0])


def _window_hashes(norms: Sequence[str], k: int = SHINGLE) -> tuple[np.ndarray, np.ndarray]:
    """The 64-bit hash of every ``k``-character window of many normalised texts, in one pass.

    Returns ``(hashes, starts)``: all windows concatenated, and where each text's begin. A
    text shorter than ``k`` is one window, padded with NULs (which :func:`normalize_text`
    never leaves in a text: they are not word characters).
    """
    padded = [t if len(t) >= k else t + "\0" * (k - len(t)) for t in norms]
    codes = np.frombuffer("".join(padded).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    lengths = np.fromiter(map(len, padded), dtype=np.int64, count=len(padded))
    windows = lengths - (k - 1)
    starts = np.zeros(len(padded), dtype=np.int64)
    np.cumsum(windows[:-1], out=starts[1:])
    first_char = np.zeros(len(padded), dtype=np.int64)
    np.cumsum(lengths[:-1], out=first_char[1:])
    # Window w of text d begins at character first_char[d] + (w - starts[d]).
    pos = np.arange(int(windows.sum()), dtype=np.int64) + np.repeat(first_char - starts, windows)
    h = np.zeros(len(pos), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(k):  # polynomial hash of each window, wrapping at 2^64
            h = h * np.uint64(1_000_003) + codes[pos + j]
        h ^= h >> np.uint64(29)
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(32)
    return h, starts


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
    """MinHash signatures (``uint32``), one row of :data:`NUM_PERM` values per hash array
    (datasketch's ``affine32`` MinHash; see :func:`engine.data.lsh.signatures`)."""
    if not len(hashes):
        return np.zeros((0, NUM_PERM), dtype=np.uint32)
    arrays = [h if len(h) else np.zeros(1, dtype=np.uint64) for h in hashes]
    starts = np.cumsum([0] + [len(h) for h in arrays[:-1]])
    return lsh.signatures(np.concatenate(arrays), starts)


def _signatures(norms: Sequence[str], progress: Progress | None = None) -> np.ndarray:
    """MinHash signatures of normalised texts, :data:`_BATCH` texts at a time."""
    sigs = np.empty((len(norms), NUM_PERM), dtype=np.uint32)
    for start in range(0, len(norms), _BATCH):
        sigs[start : start + _BATCH] = lsh.signatures(*_window_hashes(norms[start : start + _BATCH]))
        if progress:
            done = min(len(norms), start + _BATCH)
            progress(done / len(norms), f"MinHash signatures: {done:,} of {len(norms):,} prompts")
    return sigs


def _linked(
    texts: Sequence[str], threshold: float, progress: Progress | None = None
) -> tuple[list[int], dict[tuple[int, int], float]]:
    """Each text's representative (the first text with the same normalised form) and the
    near-duplicate pairs among representatives with their exact similarity.

    Identical (normalised) texts share one representative, so a template repeated 1,000 times
    does not fill an LSH bucket with half a million candidate pairs.
    """
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    norms = [normalize_text(t) for t in texts]
    first: dict[str, int] = {}
    rep = [first.setdefault(t, i) for i, t in enumerate(norms)]
    uniq = list(first.values())  # increasing: first occurrences in order
    linked: dict[tuple[int, int], float] = {}
    if len(uniq) > 1:
        sigs = _signatures([norms[i] for i in uniq], span(progress, 0.0, 0.45))
        left, right = lsh.candidate_pairs(sigs, threshold, span(progress, 0.45, 0.9))
        if progress:
            progress(0.9, f"checking {len(left):,} candidate pairs exactly")
        exact: dict[int, np.ndarray] = {}  # sorted unique shingle hashes, only where needed

        def hashes(i: int) -> np.ndarray:
            if i not in exact:
                exact[i] = _distinct(_window_hashes([norms[uniq[i]]])[0])
            return exact[i]

        for a, b in zip(left.tolist(), right.tolist(), strict=True):
            sim = jaccard(hashes(a), hashes(b))
            if sim >= threshold:
                linked[(uniq[a], uniq[b])] = sim
    if progress:
        progress(1.0, f"{len(linked):,} near-duplicate pairs")
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


def near_duplicate_groups(
    texts: Sequence[str], threshold: float = DEFAULT_THRESHOLD, *, progress: Progress | None = None
) -> list[list[int]]:
    """Groups of indices of texts that are near-duplicates of each other (transitively).

    Args:
        texts: the texts.
        threshold: minimum :func:`similarity` for two texts to be linked.
        progress: ``progress(fraction, message)`` as the search goes (signatures, LSH, checks).

    Returns:
        Groups of two or more indices, each sorted, ordered by their first index.
    """
    rep, linked = _linked(texts, threshold, progress)
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
