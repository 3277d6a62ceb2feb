"""Near-duplicate detection finds planted paraphrases; a frozen test split never leaks."""

from __future__ import annotations

import json
import random
from pathlib import Path

from engine.data.dedup import (
    DEFAULT_THRESHOLD,
    check_no_leak,
    exact_duplicate_groups,
    near_duplicate_groups,
    near_duplicate_pairs,
    normalize_text,
    similarity,
)
from engine.data.importing import grouped_test_split, import_dataset, split_leaks
from engine.specs import TaskSpec
from engine.store import Store

BASE = [
    "Summarize the attached quarterly report for the board, focusing on revenue growth, churn and the "
    "hiring plan for next year.",
    "Write a polite email to a customer explaining that their refund for order 4471 will arrive within "
    "five business days.",
    "Explain how a hash table handles collisions, with a short example in Python using separate chaining.",
    "Translate the following product description into French, keeping the brand names in English: "
    "lightweight hiking boots with waterproof lining.",
    "List three risks of migrating our billing database to a new cloud provider during the holiday "
    "season, and how to reduce each.",
    "Classify the sentiment of this review as positive, negative or neutral: the battery lasts two days "
    "but the screen scratches easily.",
    "Draft a job posting for a junior data analyst who will maintain dashboards and answer ad-hoc "
    "questions from the sales team.",
    "What are the main differences between TCP and UDP, and when would a game developer choose one over "
    "the other?",
    "Extract the invoice number, the due date and the total amount from this message: invoice INV-2291 "
    "for 340 euros is due on 3 March.",
    "Give me a beginner-friendly weekly running plan to prepare for a 10 km race in eight weeks, with "
    "rest days.",
    "Rewrite this sentence in plain English for a ten-year-old: photosynthesis converts light energy into "
    "chemical energy stored in glucose.",
    "Suggest five names for a small bakery that specialises in sourdough bread and cinnamon rolls in a "
    "seaside town.",
]
# Planted paraphrases: reworded, reordered, respelled, with greetings and punctuation changes.
PARAPHRASES = {
    0: "Please summarise the attached quarterly report for the board, focusing on revenue growth, churn, "
    "and the hiring plan for next year.",
    1: "Write a polite e-mail to the customer explaining that their refund for order 4471 will arrive "
    "within 5 business days.",
    2: "Explain how a hash table deals with collisions, with a short Python example using separate chaining.",
    4: "List 3 risks of migrating our billing database to a new cloud provider during the holiday season "
    "and how to reduce each one.",
    5: "Classify the sentiment of the following review as positive, negative, or neutral: the battery "
    "lasts two days, but the screen scratches easily!",
    7: "What are the main differences between UDP and TCP, and when would a game developer pick one over "
    "the other?",
    8: "Extract the invoice number, due date and total amount from this message: invoice INV-2291 for 340 "
    "euros is due on 3 March.",
    9: "Hi! Give me a beginner friendly weekly running plan to get ready for a 10 km race in eight weeks, "
    "including rest days.",
    11: "Suggest 5 names for a small bakery that specializes in sourdough bread and cinnamon rolls in a "
    "seaside town.",
}
WORDS = [
    "river", "market", "engine", "violet", "harbor", "quiet", "ladder", "orbit", "saddle", "copper",
    "meadow", "signal", "lantern", "pepper", "glacier", "velvet", "anchor", "puzzle", "timber",
    "falcon", "marble", "cactus", "rocket", "canyon", "ribbon", "walnut",
]  # fmt: skip


def distractors(n: int, seed: int = 0) -> list[str]:
    """Distinct filler prompts: random word sequences, far from each other and from BASE."""
    rng = random.Random(seed)
    return [f"Describe {' '.join(rng.choices(WORDS, k=14))} number {i}." for i in range(n)]


def corpus() -> tuple[list[str], list[tuple[int, int]]]:
    """Texts with the paraphrases shuffled among them, and the planted (base, paraphrase) pairs."""
    texts = BASE + distractors(150)
    planted = []
    rng = random.Random(3)
    for i, para in PARAPHRASES.items():
        at = rng.randrange(len(texts) + 1)
        texts.insert(at, para)
        planted.append((BASE[i], para))
    index = {t: k for k, t in enumerate(texts)}
    return texts, [(index[a], index[b]) for a, b in planted]


def test_similarity_basics() -> None:
    assert normalize_text("  “Hello”,\tWORLD — again! ") == "hello world again"
    assert similarity("Hello, world!", "hello world") == 1.0
    assert similarity(BASE[0], BASE[1]) < 0.1
    assert similarity(BASE[3], PARAPHRASES[0]) == similarity(PARAPHRASES[0], BASE[3])
    assert exact_duplicate_groups(["A b", "c", "a, B!", "C", "d"]) == [[0, 2], [1, 3]]


def test_planted_paraphrases_are_found_and_nothing_else() -> None:
    texts, planted = corpus()
    groups = near_duplicate_groups(texts, DEFAULT_THRESHOLD)
    assert sorted(sorted(g) for g in groups) == sorted(sorted(p) for p in planted)
    pairs = near_duplicate_pairs(texts, DEFAULT_THRESHOLD)
    assert all(DEFAULT_THRESHOLD <= s < 1 for _, _, s in pairs)


def test_threshold_controls_what_counts() -> None:
    texts, planted = corpus()
    strict = near_duplicate_groups(texts, 0.85)
    assert 0 < len(strict) < len(planted)
    assert all(similarity(texts[g[0]], texts[g[1]]) >= 0.85 for g in strict)


def test_identical_texts_group_without_blowing_up() -> None:
    texts = ["Same template text here."] * 500 + ["Something else entirely, about owls."]
    groups = near_duplicate_groups(texts)
    assert groups == [list(range(500))]


def test_check_no_leak_finds_paraphrases_across_the_split() -> None:
    train = BASE + distractors(40)
    test = [PARAPHRASES[7], "An unrelated question about beekeeping in cold climates.", BASE[5]]
    leaks = check_no_leak(train, test)
    assert [(lk.test_index, lk.train_index) for lk in leaks] == [(0, 7), (2, 5)]
    assert leaks[1].similarity == 1.0
    assert check_no_leak(BASE[:6], BASE[6:]) == []


def test_grouped_split_never_cuts_a_group() -> None:
    groups = [[0, 5, 9], [2, 3]]
    for seed in range(20):
        test = grouped_test_split(12, groups, 4, seed)
        assert len(test) == 4
        for g in groups:
            assert set(g) <= test or not set(g) & test
    assert grouped_test_split(12, groups, 4, 1) == grouped_test_split(12, groups, 4, 1)


def test_imported_split_keeps_paraphrases_together_and_never_leaks(store: Store, tmp_path: Path) -> None:
    texts, planted = corpus()
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in texts))
    task = TaskSpec(name="mixed")
    for seed in range(3):
        dataset_id, report = import_dataset(store, path, task=task, test_size=0.3, seed=seed)
        assert dataset_id is not None and report.dup_groups == len(planted)
        split = {e["input"]: e["split"] for e in store.get_examples(dataset_id)}
        assert report.n_test == round(0.3 * len(texts)) == sum(s == "test" for s in split.values())
        for a, b in planted:
            assert split[texts[a]] == split[texts[b]]
        assert split_leaks(store, dataset_id) == []
        # Any training set drawn from the train split is clean too (nested ablation subsets)...
        train = [e["input"] for e in store.get_examples(dataset_id, "train")]
        for size in (10, 50, len(train)):
            assert split_leaks(store, dataset_id, train_inputs=train[:size]) == []
        # ...and one that sneaks in a paraphrase of a test prompt is caught (it leaks both the
        # base prompt and the paraphrase, which sit together in the test split).
        test_base = next(i for i in PARAPHRASES if split[BASE[i]] == "test")
        leaks = split_leaks(store, dataset_id, train_inputs=[*train, PARAPHRASES[test_base]])
        assert len(leaks) == 2 and {lk.train_index for lk in leaks} == {len(train)}
