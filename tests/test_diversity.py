"""Diversity and balance: lengths, field distributions, near-duplicates, balanced sampling,
embeddings (one test with the real offline MiniLM), clusters, the embed job, and the Data
page's dry-run import helpers."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from engine import jobs
from engine.context import JobContext
from engine.data import diversity as div
from engine.data import embeddings as emb
from engine.data.embed_job import latest_embed_job
from engine.data.embed_job import main as embed_main
from engine.data.importing import import_dataset
from engine.demo.task import generate_examples
from engine.specs import SpecError, TaskSpec
from engine.store import Store
from engine.ui import data as dv
from tests.actors import ADMIN

DATA = Path(__file__).parent / "data"
JSON_TASK = TaskSpec(name="tickets", output_kind="json", json_fields=["intent", "product", "order_id"])
LABEL_TASK = TaskSpec(name="sentiment", output_kind="label", labels=["pos", "neg"])


def ex(i: int, text: str, ref: str | None, split: str = "train", **extra: object) -> dict:
    return {"idx": i, "split": split, "input": text, "reference": ref, "meta": {"extra": extra}}


def fake_encoder(texts: list[str]) -> np.ndarray:
    """Deterministic 'embeddings': texts about refunds and about shipping point apart."""
    rows = []
    for t in texts:
        seed = int.from_bytes(t.encode()[:8].ljust(8, b"\0"), "little") % 2**32
        noise = np.random.default_rng(seed).normal(0, 0.05, 8)
        base = np.eye(8)[0 if "refund" in t else 1 if "ship" in t else 2]
        rows.append(base + noise)
    return np.array(rows)


@pytest.fixture
def demo_dataset(store: Store, tmp_path: Path) -> str:
    """60 demo tickets imported as a JSON task (its split keeps near-duplicates together)."""
    src = tmp_path / "tickets.jsonl"
    with src.open("w") as fh:
        for e in generate_examples(60, seed=3):
            fh.write(json.dumps({"prompt": e["input"], "completion": e["reference"]}) + "\n")
    ds_id, report = import_dataset(store, src, task=JSON_TASK, test_size=10)
    assert ds_id, report.message
    return ds_id


# ----------------------------------------------------------------------------- lengths
def test_lengths_count_chars_and_whitespace_words_per_field() -> None:
    examples = [ex(0, "a b c", "yes"), ex(1, "hello   world", None), ex(2, "one", "two words")]
    frame = div.length_frame(examples)
    assert len(frame) == 5  # the answerless example has no output row
    inputs = frame[frame["field"] == "input"]
    assert list(inputs["words"]) == [3, 2, 1] and list(inputs["chars"]) == [5, 13, 3]
    summary = div.length_summary(frame).set_index(["field", "unit"])
    assert summary.loc[("output", "words"), "max"] == 2
    assert summary.loc[("input", "words"), "count"] == 3
    fig = div.length_histogram(frame, "chars")
    assert [t.name for t in fig.data] == ["input", "output"]
    assert [a.text for a in fig.layout.annotations] == ["input (3 examples)", "output (2 examples)"]


# ----------------------------------------------------------------------- distributions
def test_label_and_json_field_distributions_count_missing_and_invalid() -> None:
    labels = [ex(i, f"t{i}", r) for i, r in enumerate(["pos", "pos", "neg", "meh", None])]
    (dist,) = div.field_distributions(labels, LABEL_TASK)
    assert dist.field == "label" and dict(dist.counts) == {"pos": 2, "neg": 1, div.INVALID: 1, div.MISSING: 1}
    answers = [
        ex(0, "a", '{"intent": "refund", "product": "phone", "order_id": "A1", "note": 1}', lang="en"),
        ex(1, "b", '{"intent": "refund", "product": "laptop", "order_id": "A2"}', lang="en"),
        ex(2, "c", "not json", lang="de"),
    ]
    dists = {d.field: d for d in div.field_distributions(answers, JSON_TASK)}
    assert list(dists) == ["intent", "product", "order_id", "note", "extra.lang"]
    assert dict(dists["intent"].counts) == {"refund": 2, div.INVALID: 1}
    assert dict(dists["note"].counts) == {"1": 1, div.MISSING: 2}
    assert dict(dists["extra.lang"].counts) == {"en": 2, "de": 1}
    assert dists["intent"].categorical and not dists["order_id"].categorical  # ids are not balanced on
    assert list(dists["intent"].frame()["share"]) == [0.667, 0.333]
    assert div.field_key(JSON_TASK, "product")(answers[1]) == "laptop"


def test_near_duplicates_group_paraphrases_and_flag_split_crossings() -> None:
    examples = [
        ex(0, "Where is my order A12345? It has not arrived yet.", None),
        ex(1, "Where is my order A12345?? It has not arrived yet!", None, split="test"),
        ex(2, "Please cancel my subscription today.", None),
        ex(3, "Completely unrelated question about the weather.", None),
    ]
    dups = div.near_duplicates(examples, threshold=0.8)
    assert list(dups["idx"]) == [0, 1] and set(dups["group"]) == {1}
    assert dups["crosses_split"].all() and dups["similarity"].iloc[1] >= 0.8
    assert div.duplicates_summary(dups) == (
        "1 group holding 2 prompts; **1 group spans train and test** (a leak)."
    )
    assert div.near_duplicates(examples[2:], 0.8).empty


# ------------------------------------------------------------------- balanced sampling
def test_balanced_sample_spreads_evenly_and_is_seeded() -> None:
    pool = [{"id": i, "label": lab} for i, lab in enumerate(["a"] * 90 + ["b"] * 8 + ["c"] * 2)]
    sample = div.balanced_sample(pool, lambda e: e["label"], n=30, seed=1)
    assert Counter(e["label"] for e in sample) == {"a": 20, "b": 8, "c": 2}
    assert [e["id"] for e in sample] == sorted(e["id"] for e in sample)  # pool order
    assert sample == div.balanced_sample(pool, lambda e: e["label"], n=30, seed=1)
    assert sample != div.balanced_sample(pool, lambda e: e["label"], n=30, seed=2)
    # Even groups: counts differ by at most one; n beyond the pool gives the pool.
    even = div.balanced_sample(pool[:60], lambda e: e["id"] % 7, n=20, seed=0)
    counts = Counter(e["id"] % 7 for e in even)
    assert len(even) == 20 and max(counts.values()) - min(counts.values()) <= 1
    assert len(div.balanced_sample(pool, lambda e: e["label"], n=500)) == 100
    assert sum(div.balanced_quotas({"x": 5, "y": 5, "z": 5}, 7, seed=0).values()) == 7
    with pytest.raises(ValueError):
        div.balanced_quotas({"x": 1}, -1)
    frame = div.balance_frame(pool, sample, lambda e: e["label"])
    assert frame.set_index("value").loc["c"].tolist() == [2, 2]


def test_balanced_dataset_keeps_the_test_split(store: Store, demo_dataset: str) -> None:
    key = div.field_key(JSON_TASK, "intent")
    new_id = div.save_balanced_dataset(store, demo_dataset, key, n=20, seed=0, actor=ADMIN)
    assert new_id != demo_dataset
    new, old = store.get_examples(new_id), store.get_examples(demo_dataset)
    assert [e["input"] for e in new if e["split"] == "test"] == [
        e["input"] for e in old if e["split"] == "test"
    ]
    train = [e for e in new if e["split"] == "train"]
    counts = Counter(map(key, train))
    assert len(train) == 20 and max(counts.values()) - min(counts.values()) <= 1
    assert store.get_dataset(new_id)["name"] == "tickets-balanced"
    assert all(e["meta"]["balanced_from"]["dataset"] == demo_dataset for e in new)
    assert (
        div.save_balanced_dataset(store, demo_dataset, key, n=20, seed=0, actor=ADMIN) == new_id
    )  # content-hashed


# --------------------------------------------------------------------------- embeddings
def test_real_minilm_embeds_offline_and_separates_topics() -> None:
    texts = [f"I want a refund for my {p}, it broke." for p in ("phone", "laptop", "tablet", "monitor")]
    texts += [f"When will my {p} be shipped to me?" for p in ("phone", "laptop", "tablet", "monitor")]
    vectors = emb.embed_texts(texts)
    assert vectors.shape == (8, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    emap = emb.cluster_map(vectors, k=2)
    assert len(set(emap.labels[:4])) == 1 and len(set(emap.labels[4:])) == 1
    assert emap.labels[0] != emap.labels[4]


def test_cluster_map_finds_topics_with_representatives() -> None:
    texts = [f"refund please {i}" for i in range(10)] + [f"ship it {i}" for i in range(6)]
    vectors = emb.embed_texts(texts, fake_encoder, batch=4)
    emap = emb.cluster_map(vectors, k=2)
    assert emap.k == 2 and emap.xy.shape == (16, 2)
    assert set(emap.labels[:10]) == {0} and set(emap.labels[10:]) == {1}  # 0 = the largest cluster
    assert emap.representatives[0] < 10 <= emap.representatives[1]
    examples = [ex(i, t, None) for i, t in enumerate(texts)]
    table = emb.cluster_table(examples, emap)
    assert list(table["size"]) == [10, 6] and "refund" in table["representative"][0]
    frame = emb.map_frame(examples, emap)
    fig = emb.map_figure(frame)
    assert len(fig.data) == 2 and "ship it" in " ".join(fig.data[1].text)
    assert emb.cluster_key(examples, emap)(examples[12]) == 1
    assert emb.cluster_map(np.ones((3, 4))).k == 1  # identical points: one cluster, no crash
    assert emb.default_k(1) == 1 and emb.default_k(8) == 2 and emb.default_k(260) == 5
    assert emb.default_k(10_000) == emb.MAX_K


def test_dataset_embeddings_are_cached_and_the_embed_job_writes_them(store: Store, demo_dataset: str) -> None:
    job_id = store.enqueue("embed", {"dataset_id": demo_dataset})
    assert jobs.REGISTRY["embed"] == "engine.data.embed_job:main"
    assert latest_embed_job(store, demo_dataset)["id"] == job_id
    calls: list[int] = []

    def counting(texts: list[str]) -> np.ndarray:
        calls.append(len(texts))
        return fake_encoder(texts)

    emb.load_encoder.cache_clear()
    original = emb.load_encoder
    try:
        emb.load_encoder = lambda: counting  # type: ignore[assignment]
        ctx = JobContext(store=store, job=store.get_job(job_id), spec={"dataset_id": demo_dataset})
        embed_main(ctx)
    finally:
        emb.load_encoder = original  # type: ignore[assignment]
    assert sum(calls) == 60 and store.get_job(job_id)["progress"] == 1.0
    cached = emb.cached_embeddings(store, demo_dataset, 60)
    assert cached is not None and cached.shape == (60, 8)
    assert emb.dataset_embeddings(store, demo_dataset, counting) is not None and sum(calls) == 60
    assert emb.cached_embeddings(store, demo_dataset, 61) is None  # wrong size: not trusted
    with pytest.raises(SpecError):
        embed_main(JobContext(store=store, job=store.get_job(job_id), spec={"dataset": "x"}))


# ---------------------------------------------------------------------- page helpers
def test_check_import_is_a_dry_run_that_reports_lines_and_cleaning(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENSEI_DATA_ROOTS", str(DATA))  # the test files' folder is a data root
    check = dv.check_import(store, DATA / "bad" / "bad_json_line.jsonl", task=TaskSpec())
    report = check.report
    assert (report.rows_read, report.rows_valid, report.bad_rows) == (3, 2, 1)
    issues = dv.issues_frame(report)
    assert issues.loc[0, "line"] == "2" and issues.loc[0, "kind"] == "bad_json"
    assert "1 bad row, 2 valid" in report.message
    assert report.can_import("valid_only") and not report.can_import("strict")
    cleaned = dv.check_import(store, DATA / "good" / "alpaca.jsonl", task=TaskSpec(), rules=["exact_dedup"])
    assert list(dv.cleaning_frame(cleaned.report)["before"]) == [6] and len(cleaned.preview()) > 0
    assert store.list_datasets() == []


def test_preview_mapping_upload_and_dataset_table(
    store: Store, demo_dataset: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SENSEI_DATA_ROOTS", str(DATA))
    preview = dv.preview_source(store, DATA / "good" / "qa.csv")
    assert preview.fmt == "csv" and preview.columns == ["id", "question", "answer"] and preview.needs_mapping
    guess = dv.guess_columns(preview.columns)
    assert guess == {"prompt": "question", "answer": "answer"}
    assert dv.column_mapping("question", "answer") == {"prompt": "question", "completion": "answer"}
    assert dv.column_mapping("q", None, "task") == {"instruction": "task", "input": "q"}
    assert dv.preview_source(store, DATA / "nope.jsonl").error
    path = dv.save_upload(store, "../my data.jsonl", b'{"prompt": "x"}\n', actor=ADMIN)
    assert path.parent.parent == store.home / "uploads" and path.name == "my_data.jsonl"
    assert dv.save_upload(store, "../my data.jsonl", b'{"prompt": "x"}\n', actor=ADMIN) == path
    assert dv.test_count(0.1, 6) == 1 and dv.test_count(0.5, 2) == 1 and dv.test_count(0.2, 100) == 20
    frame = dv.datasets_frame(store)
    assert frame.loc[0, "name"] == "tickets" and frame.loc[0, "version"] == 1 and frame.loc[0, "test"] == 10
    assert dv.make_task("t", "label", labels="a, b").labels == ["a", "b"]
    with pytest.raises(ValueError):
        dv.make_task("t", "label")
