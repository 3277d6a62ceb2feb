"""The ``import`` job: checked before it is queued, imports a file end to end with progress,
writes its report, and refuses bad rows per mode without writing a dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine import jobs
from engine.data import import_job
from engine.data.import_job import load_report, queue_import
from engine.data.report import ImportReport, Issue
from engine.specs import SpecError, TaskSpec
from engine.store import Store
from tests.actors import ADMIN
from tests.inline_jobs import run_queued
from tests.test_dedup import BASE, PARAPHRASES, distractors

TASK = TaskSpec(name="mixed")


@pytest.fixture(autouse=True)
def _tmp_is_a_data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The test files are written in ``tmp_path``: an admin declared it a data root."""
    monkeypatch.setenv("SENSEI_DATA_ROOTS", str(tmp_path))


def write_jsonl(path: Path, prompts: list[str], bad_lines: dict[int, str] | None = None) -> Path:
    lines = [json.dumps({"prompt": p, "completion": f"answer {i}"}) for i, p in enumerate(prompts)]
    for at, text in sorted((bad_lines or {}).items()):
        lines.insert(at - 1, text)  # 1-based line numbers, as the report names them
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_import_job_imports_a_file_end_to_end_with_progress(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts = [*BASE, *distractors(60), PARAPHRASES[0], PARAPHRASES[7]]
    src = write_jsonl(tmp_path / "prompts.jsonl", prompts)
    job_id = queue_import(store, src, task=TASK, test_size=12, seed=3, actor=ADMIN)
    job = store.get_job(job_id)
    assert job and job["kind"] == "import" and job["status"] == "queued"
    assert job["spec"]["path"] == str(src) and job["spec"]["test_size"] == 12
    assert store.list_datasets() == [] and load_report(store, job_id) is None
    seen: list[tuple[float, str]] = []
    set_progress = Store.set_progress

    def spy(self: Store, jid: str, progress: float, message: str = "") -> None:
        seen.append((progress, message))
        set_progress(self, jid, progress, message)

    monkeypatch.setattr(Store, "set_progress", spy)
    assert run_queued(store) == [job_id]
    job = store.get_job(job_id)
    assert job and job["status"] == "succeeded" and job["progress"] == 1.0, job
    (ds,) = store.list_datasets()
    assert (ds["name"], ds["n_train"], ds["n_test"]) == ("prompts", len(prompts) - 12, 12)
    report = load_report(store, job_id)
    assert report and report.imported and report.dataset_id == ds["id"] and report.dup_groups == 2
    assert job["message"] == report.message and report.message.startswith("Imported as prompts v1")
    split = {e["input"]: e["split"] for e in store.get_examples(ds["id"])}
    assert split[BASE[0]] == split[PARAPHRASES[0]] and split[BASE[7]] == split[PARAPHRASES[7]]
    # Progress moved forward through every stage of the import.
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and len(seen) >= 3
    text = " ".join(m for _, m in seen)
    assert "reading prompts.jsonl" in text and "Imported as" in text
    assert import_job.KIND in jobs.REGISTRY and jobs.REGISTRY["import"] == "engine.data.import_job:main"


def test_progress_names_every_stage(store: Store, tmp_path: Path) -> None:
    from engine.data.importing import import_dataset

    src = write_jsonl(tmp_path / "p.jsonl", [*BASE, *distractors(30)])
    seen: list[tuple[float, str]] = []
    dataset_id, _ = import_dataset(
        store, src, task=TASK, rules=["exact_dedup"], progress=lambda f, m: seen.append((f, m))
    )
    assert dataset_id
    text = "\n".join(m for _, m in seen)
    for stage in ("reading", "cleaning", "near-duplicates", "MinHash", "LSH", "splitting", "saving"):
        assert stage in text, stage
    fractions = [f for f, _ in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_bad_rows_fail_a_strict_import_job_and_valid_only_skips_them(store: Store, tmp_path: Path) -> None:
    bad = {3: "{not json", 9: json.dumps({"prompt": ""})}
    src = write_jsonl(tmp_path / "rows.jsonl", [*BASE, *distractors(20)], bad)
    strict = queue_import(store, src, task=TASK, test_size=5, actor=ADMIN)
    run_queued(store)
    job = store.get_job(strict)
    assert job and job["status"] == "failed" and "2 bad rows in strict mode" in job["error"]
    report = load_report(store, strict)
    assert report and not report.imported and [i.line for i in report.issues] == [3, 9]
    assert report.message.startswith("Nothing was imported")
    assert store.list_datasets() == [] and not (store.home / "datasets").exists()

    valid = queue_import(store, src, task=TASK, test_size=5, mode="valid_only", actor=ADMIN)
    run_queued(store)
    job = store.get_job(valid)
    assert job and job["status"] == "succeeded", job
    (ds,) = store.list_datasets()
    assert ds["n_train"] + ds["n_test"] == len(BASE) + 20
    report = load_report(store, valid)
    assert report and report.bad_rows == 2 and "2 bad rows skipped" in report.message


def test_bad_options_are_refused_before_anything_is_queued(store: Store, tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "ok.jsonl", BASE)
    for options, words in [
        ({"mode": "lenient"}, "mode"),
        ({"test_size": 1.5}, "test_size"),
        ({"test_size": 0}, "test_size"),
        ({"rules": ["no_such_rule"]}, "no_such_rule"),
        ({"rules": [("near_dedup", {"threshold": "high"})]}, "threshold"),
        ({"dedup_threshold": 0.0}, "dedup_threshold"),
        ({"fmt": "xml"}, "format"),
        ({"colour": "blue"}, "colour"),
    ]:
        with pytest.raises((ValueError, SpecError), match=words):
            queue_import(store, src, task=TASK, **options, actor=ADMIN)
    with pytest.raises(ValueError, match="no such file"):
        queue_import(store, tmp_path / "missing.jsonl", task=TASK, actor=ADMIN)
    assert store.list_jobs() == []
    # A rule given as (name, params) is stored as JSON the worker reads back.
    job_id = queue_import(
        store, src, task=TASK, rules=[("near_dedup", {"threshold": 0.9})], test_size=2, actor=ADMIN
    )
    assert (store.get_job(job_id) or {})["spec"]["rules"] == [{"rule": "near_dedup", "threshold": 0.9}]


def test_report_round_trips_through_json() -> None:
    report = ImportReport(
        path="x.jsonl",
        fmt="jsonl",
        rows_read=3,
        rows_valid=2,
        issues=[Issue("x.jsonl", 2, "line", "prompt", "empty_prompt", "the prompt is empty")],
        cleaning=[{"rule": "exact_dedup", "params": {}, "before": 2, "after": 2, "dropped": 0, "changed": 0}],
        message="done",
    )
    back = ImportReport.from_dict(json.loads(json.dumps(report.to_dict())))
    assert back == report and back.bad_rows == 1
    assert ImportReport.from_dict({**report.to_dict(), "added_later": 1}) == report
