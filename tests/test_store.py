"""Store: migrations, transactions, job state machine."""

from __future__ import annotations

import sqlite3

import pytest

from engine.store import SCHEMA_VERSION, Store

pytestmark = pytest.mark.both_backends


def test_new_workspace_is_migrated_and_reopens(tmp_path, backend: str) -> None:
    s = Store(tmp_path / "ws")
    assert s.db.name == backend and s.schema_version() == SCHEMA_VERSION
    if backend == "sqlite":
        assert s.db_path.exists()
        mode = sqlite3.connect(s.db_path).execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"
    else:  # only the database moved: the artifacts stay in the workspace
        assert s.db_path is None and not (tmp_path / "ws" / "sensei.db").exists()
        assert (tmp_path / "ws" / "runs").is_dir()
    s2 = Store(tmp_path / "ws")  # reopening an existing workspace must not re-run migrations
    assert s2.schema_version() == SCHEMA_VERSION
    assert [c["name"] for c in s2.list_categories()][-1] == "other"  # the taxonomy's rows once


def test_newer_schema_is_refused(tmp_path) -> None:
    s = Store(tmp_path / "ws")
    with s.tx() as conn:
        s.db.set_schema_version(conn, SCHEMA_VERSION + 1)
    with pytest.raises(RuntimeError, match="newer"):
        Store(tmp_path / "ws")


def test_transaction_is_all_or_nothing(store: Store) -> None:
    with pytest.raises(RuntimeError), store.tx() as conn:
        store.add_job(conn, "sleep", {})
        raise RuntimeError("boom")
    assert store.list_jobs() == []


def test_job_terminal_status_is_final(store: Store) -> None:
    job_id = store.enqueue("sleep", {"seconds": 1})
    assert store.get_job(job_id)["status"] == "queued"
    assert store.mark_started(job_id, 12345, None)
    assert not store.mark_started(job_id, 12345, None)  # only once
    store.set_progress(job_id, 0.5, "half")
    assert store.get_job(job_id)["progress"] == 0.5
    assert store.finish_job(job_id, "cancelled", error="user")
    assert not store.finish_job(job_id, "succeeded")  # a late worker cannot overwrite a cancel
    job = store.get_job(job_id)
    assert job["status"] == "cancelled" and job["error"] == "user"


def test_ids_sort_by_creation(store: Store) -> None:
    ids = [store.enqueue("sleep", {}) for _ in range(5)]
    assert ids == sorted(ids)


def test_dataset_is_deduplicated_by_content_hash(store: Store) -> None:
    rows = [
        {
            "idx": i,
            "split": "test" if i == 0 else "train",
            "input": f"x{i}",
            "prompt": f"p{i}",
            "reference": "r",
        }
        for i in range(3)
    ]
    a = store.save_dataset("d", "hash1", {"name": "t"}, rows)
    b = store.save_dataset("d", "hash1", {"name": "t"}, rows)
    assert a == b
    ds = store.get_dataset(a)
    assert (ds["n_train"], ds["n_test"]) == (2, 1)
    assert [e["idx"] for e in store.get_examples(a, "train")] == [1, 2]


def test_metrics_and_outputs(store: Store) -> None:
    store.log_metrics("run-1", 1, {"loss": 2.0})
    store.log_metrics("run-1", 2, {"loss": 1.0})
    assert [p["value"] for p in store.metric_series(["run-1"], "loss")] == [2.0, 1.0]
    store.save_outputs(
        "run-1", [{"idx": 0, "prompt": "p", "output": "o", "reference": "r", "scores": {"exact_match": 0.0}}]
    )
    assert store.list_outputs("run-1")[0]["scores"] == {"exact_match": 0.0}
