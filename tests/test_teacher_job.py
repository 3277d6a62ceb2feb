"""The teacher job on the fast demo spec, with a real store and the real simulated teacher."""

from __future__ import annotations

import json
from typing import Any

import pytest

from engine.context import JobContext
from engine.data.datasets import ensure_dataset
from engine.demo.source import split_indices
from engine.specs import ExperimentSpec, TeacherSpec, demo_spec
from engine.store import Store
from engine.teacher import job as teacher_job
from engine.teacher.client import MissingApiKeyError


def make_ctx(store: Store, spec: ExperimentSpec) -> JobContext:
    spec_dict = spec.model_dump(mode="json")
    with store.tx() as conn:
        exp_id = store.add_experiment(conn, spec.name, spec_dict, spec.fingerprint())
        job_id = store.add_job(conn, "teacher", {"experiment": spec_dict}, experiment_id=exp_id)
    job = store.get_job(job_id)
    assert job is not None
    return JobContext(store=store, job=job, spec=job["spec"])


def summary(ctx: JobContext) -> dict[str, Any]:
    path = ctx.store.experiments_dir / ctx.job["experiment_id"] / "teacher_summary.json"
    return json.loads(path.read_text())


def dataset_of(ctx: JobContext) -> str:
    exp = ctx.store.get_experiment(ctx.job["experiment_id"])
    assert exp is not None
    return str(exp["dataset_id"])


def test_dataset_is_content_hashed_with_a_frozen_test_split(store: Store) -> None:
    spec = demo_spec("fast")
    ds = ensure_dataset(store, spec)
    assert ensure_dataset(store, spec) == ds  # identical content: reused, not duplicated
    rows = store.get_examples(ds)
    assert [r["idx"] for r in rows] == list(range(spec.data.demo_examples))
    test = {r["idx"] for r in rows if r["split"] == "test"}
    assert test == split_indices(spec.data.demo_examples, spec.data.test_size, spec.data.seed)
    assert len(test) == spec.data.test_size
    assert all(r["prompt"].endswith(f"Message: {r['input']}\nJSON:") for r in rows)
    other = ensure_dataset(store, spec.model_copy(update={"data": spec.data.model_copy(update={"seed": 1})}))
    assert other != ds


def test_teacher_answers_everything_once_and_a_rerun_makes_no_calls(store: Store) -> None:
    spec = demo_spec("fast")
    ctx = make_ctx(store, spec)
    teacher_job.main(ctx)

    ds = dataset_of(ctx)
    answers = store.get_teacher_responses(ds, spec.teacher_key())
    assert set(answers) == set(range(spec.data.demo_examples))  # train and test
    assert all(a["error"] is None and a["output"] for a in answers.values())
    first = summary(ctx)
    assert first["requested"] == first["answered"] == first["http_requests"] == spec.data.demo_examples
    # The simulated teacher errs on ~15% of prompts; the strict check flags the unparseable ones.
    invalid = [a for a in answers.values() if not a["valid"]]
    assert 0 < len(invalid) == first["invalid"] < 0.3 * len(answers)
    job = store.get_job(ctx.job_id)
    assert job is not None and job["progress"] == 1.0 and "140/140" in job["message"]
    test_ids = {e["idx"] for e in store.get_examples(ds, "test")}

    teacher_job.main(make_ctx(store, spec))  # a second experiment with the same data and teacher
    teacher_job.main(ctx)  # and the same job again
    assert summary(ctx)["requested"] == 0 and summary(ctx)["http_requests"] == 0
    assert dataset_of(ctx) == ds
    assert {e["idx"] for e in store.get_examples(ds, "test")} == test_ids
    assert store.get_teacher_responses(ds, spec.teacher_key()) == answers


def test_a_killed_job_resumes_with_only_the_missing_answers(store: Store) -> None:
    spec = demo_spec("fast")
    ctx = make_ctx(store, spec)
    teacher_job.main(ctx)
    ds = dataset_of(ctx)
    with store.tx() as conn:  # as if the job died after saving 100 answers, cache lost too
        conn.execute("DELETE FROM teacher_responses WHERE dataset_id=? AND idx >= 100", (ds,))
    (store.home / "llm_cache.db").unlink()
    teacher_job.main(ctx)
    s = summary(ctx)
    assert s["requested"] == s["http_requests"] == spec.data.demo_examples - 100
    assert len(store.get_teacher_responses(ds, spec.teacher_key())) == spec.data.demo_examples

    # Lost answers whose requests are in the (new) cache cost nothing and make no HTTP call.
    with store.tx() as conn:
        conn.execute("DELETE FROM teacher_responses WHERE dataset_id=? AND idx >= 130", (ds,))
    teacher_job.main(ctx)
    assert summary(ctx)["cached"] == 10 and summary(ctx)["http_requests"] == 0


def test_a_different_teacher_reanswers_the_shared_dataset(store: Store) -> None:
    spec = demo_spec("fast")
    teacher_job.main(make_ctx(store, spec))
    stricter = spec.model_copy(update={"teacher": TeacherSpec(kind="demo", demo_error_rate=0.0)})
    ctx = make_ctx(store, stricter)
    teacher_job.main(ctx)
    assert summary(ctx)["requested"] == spec.data.demo_examples
    answers = store.get_teacher_responses(dataset_of(ctx), stricter.teacher_key())
    assert all(a["valid"] for a in answers.values())
    # The first teacher's answers are kept apart, not overwritten.
    first = store.get_teacher_responses(dataset_of(ctx), spec.teacher_key())
    assert len(first) == spec.data.demo_examples and not all(a["valid"] for a in first.values())


def test_an_unreachable_teacher_fails_the_job_with_the_first_error(store: Store) -> None:
    teacher = TeacherSpec(base_url="http://127.0.0.1:9/v1", max_retries=0, timeout_s=5)
    spec = demo_spec("fast").model_copy(update={"teacher": teacher})
    ctx = make_ctx(store, spec)
    with pytest.raises(RuntimeError, match=r"140 of 140 prompts .* no answer .*cannot reach"):
        teacher_job.main(ctx)
    answers = store.get_teacher_responses(dataset_of(ctx), spec.teacher_key())
    assert len(answers) == 140 and all(a["error"] for a in answers.values())  # retried next time


def test_a_missing_key_variable_is_named(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SENSEI_TEST_NO_SUCH_KEY", raising=False)
    monkeypatch.setenv("SENSEI_KEY_ENVS", "SENSEI_TEST_NO_SUCH_KEY")  # declared, but not set
    teacher = TeacherSpec(base_url="http://127.0.0.1:9/v1", api_key_env="SENSEI_TEST_NO_SUCH_KEY")
    spec = demo_spec("fast").model_copy(update={"teacher": teacher})
    with pytest.raises(MissingApiKeyError, match="SENSEI_TEST_NO_SUCH_KEY"):
        teacher_job.main(make_ctx(store, spec))
