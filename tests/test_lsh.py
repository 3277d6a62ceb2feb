"""MinHash LSH through datasketch: signatures are datasketch's, near-duplicates are found
through MinHashLSH and verified exactly, bands meet the recall the threshold promises."""

from __future__ import annotations

import random
from itertools import combinations

import numpy as np
import pytest
from datasketch import MinHash

from engine.data import dedup, lsh
from engine.data.dedup import near_duplicate_groups, near_duplicate_pairs, shingle_hashes, similarity

WORDS = [
    "river", "market", "engine", "violet", "harbor", "quiet", "ladder", "orbit", "saddle",
    "copper", "meadow", "signal", "lantern", "pepper", "glacier", "velvet", "anchor", "puzzle",
    "timber", "falcon", "marble", "cactus", "rocket", "canyon", "ribbon", "walnut",
]  # fmt: skip


def filler(n: int, seed: int = 0) -> list[str]:
    """Prompts that share an opening (boilerplate shingles) and little else."""
    rng = random.Random(seed)
    return [f"Please answer briefly: {' '.join(rng.sample(WORDS, k=10))} case {i}." for i in range(n)]


def test_signatures_are_datasketch_minhashes() -> None:
    texts = ["", "ab", "Hello, world!", "“Smart” quotes — and dashes", "日本語のテキストです", "x " * 400]
    norms = [dedup.normalize_text(t) for t in texts]
    sigs = dedup._signatures(norms)
    assert sigs.shape == (len(texts), lsh.NUM_PERM) and sigs.dtype == np.uint32
    for text, sig in zip(texts, sigs, strict=True):
        ref = MinHash(num_perm=lsh.NUM_PERM, seed=lsh.SEED, scheme=lsh.SCHEME, hashfunc=lambda v: v)
        ref.update_batch([int(h) & 0xFFFFFFFF for h in shingle_hashes(text)])
        assert np.array_equal(ref.hashvalues, sig), text
    # The batched shingle hashes are the one-text ones, text by text.
    hashes, starts = dedup._window_hashes(norms)
    for i, text in enumerate(texts):
        end = starts[i + 1] if i + 1 < len(texts) else len(hashes)
        assert np.array_equal(np.unique(hashes[starts[i] : end]), shingle_hashes(text))
    assert np.array_equal(dedup.minhash_signatures([shingle_hashes(t) for t in texts]), sigs)


def test_a_near_duplicate_pair_is_found_through_minhash_lsh_and_verified_exactly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    base = "Write a polite email to a customer explaining that the refund for order 4471 comes in five days."
    close = "Write a polite e-mail to the customer explaining that the refund for order 4471 comes in 5 days!"
    far = "Write a polite note to a client saying that the refund for your order comes within a week."
    assert 0.6 <= similarity(base, close) < 0.8 and 0.3 < similarity(base, far) < 0.6
    texts = filler(200)
    texts[37], texts[150], texts[180] = base, close, far
    indexes: list[object] = []

    class Spy(lsh.MinHashLSH):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            indexes.append(self)

    monkeypatch.setattr(lsh, "MinHashLSH", Spy)
    pairs = near_duplicate_pairs(texts, 0.6)
    assert indexes, "candidates must come from datasketch's MinHashLSH"
    assert pairs == [(37, 150, similarity(base, close))]  # exact similarity, not the estimate
    assert near_duplicate_groups(texts, 0.6) == [[37, 150]]
    assert [37, 150, 180] in near_duplicate_groups(texts, 0.3)  # a lower threshold reaches further


def test_bands_give_the_promised_recall_and_keep_dissimilar_texts_apart() -> None:
    for threshold in (0.3, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0):
        bands, rows = lsh.lsh_params(threshold)
        assert bands >= 2 and bands * rows <= lsh.NUM_PERM
        assert lsh.recall(threshold, threshold) >= lsh.RECALL
    # At the default threshold, a pair of unrelated prompts sharing boilerplate rarely collides.
    assert lsh.recall(0.2, 0.6) < 0.1 and lsh.recall(0.1, 0.6) < 0.01
    assert lsh.lsh_params(0.01) == (lsh.NUM_PERM, 1)  # below what the bands can promise: all of them


def test_bucket_pairs_are_every_pair_once_even_in_huge_buckets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(lsh, "_PAIRS", 7)  # a 9-member bucket (36 pairs) goes a few rows at a time
    buckets = [{4, 1}, {9, 2}, {3, 5, 7}, set(range(100, 109)), {20, 21, 22, 23}]
    got = [(int(a), int(b)) for x, y in lsh._bucket_pairs(buckets) for a, b in zip(x, y, strict=True)]
    want = [p for b in buckets for p in combinations(sorted(b), 2)]
    assert sorted(got) == sorted(want) and len(got) == len(want)


def test_many_index_groups_find_the_same_pairs(monkeypatch: pytest.MonkeyPatch) -> None:
    texts = filler(300, seed=1)
    for i in range(0, 300, 30):  # light edits of every 30th prompt
        texts.append(texts[i].replace("Please", "Kindly").rstrip(".") + "!")
    one = near_duplicate_pairs(texts)
    monkeypatch.setattr(lsh, "_INDEX_CELLS", 1000)  # many small MinHashLSH indexes instead of one
    progress: list[tuple[float, str]] = []
    groups = near_duplicate_groups(texts, progress=lambda f, m: progress.append((f, m)))
    assert near_duplicate_pairs(texts) == one and len(one) >= 10
    assert sorted(tuple(g) for g in groups) == sorted(tuple(sorted(p[:2])) for p in one)
    fractions = [f for f, _ in progress]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any("LSH" in m for _, m in progress) and any("signatures" in m for _, m in progress)
