"""Acceptance: a teacher job survives 429s, 500s, timeouts and a SIGKILL mid-job.

A real worker subprocess (``python -m engine worker``) runs the teacher job against the demo
teacher started here with injected faults; it is killed with SIGKILL once some answers are
saved, and a second worker finishes the job. Then: every prompt has exactly one answer in the
store and in the cache, nothing is lost, and no prompt whose answer had reached the cache
before the kill was asked for again (the server counts successful answers per prompt).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine import jobs
from engine.data.datasets import ensure_dataset
from engine.demo.simulated_teacher import prompt_key, start_demo_teacher
from engine.specs import AblationSpec, DataSpec, ExperimentSpec, TeacherSpec, demo_spec
from engine.store import Store
from engine.teacher import job as teacher_job
from engine.teacher.cache import cached_keys
from engine.teacher.client import build_messages, request_hash

pytestmark = pytest.mark.slow

N = 80


def server_stats(url: str) -> dict[str, Any]:
    return httpx.get(url.removesuffix("/v1") + "/stats", trust_env=False, timeout=10).json()


def fault_spec(base_url: str) -> ExperimentSpec:
    teacher = TeacherSpec(
        base_url=base_url,
        model="demo-teacher",
        concurrency=4,
        max_retries=6,
        timeout_s=0.5,  # the server's hangs last 2 s: these attempts time out and are retried
    )
    return demo_spec("fast").model_copy(
        update={
            "data": DataSpec(demo_examples=N, test_size=10),
            "ablation": AblationSpec(train_sizes=[16], seeds=[0], zero_shot=False),
            "teacher": teacher,
        }
    )


@pytest.fixture
def faulty_teacher(store: Store, tmp_path: Path) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """The demo teacher answering this test's dataset, with every kind of fault injected."""
    ds = ensure_dataset(store, fault_spec("http://placeholder/v1"))  # the data do not depend on the URL
    examples = store.get_examples(ds)
    data = tmp_path / "answers.jsonl"
    data.write_text(
        "".join(json.dumps({"prompt": e["prompt"], "reference": e["reference"]}) + "\n" for e in examples)
    )
    with start_demo_teacher(
        data, error_rate=0.0, latency=0.1, fail_rate=0.3, retry_after=0.05, hang_rate=0.12, hang_s=2.0
    ) as url:
        yield url, examples


def spawn(store: Store, job_id: str) -> Any:
    job = store.get_job(job_id)
    assert job is not None
    proc = jobs.spawn_worker(store, job)
    assert proc is not None
    return proc


def wait_for_saved_answers(store: Store, spec: ExperimentSpec, ds: str, at_least: int, proc: Any) -> None:
    deadline = time.monotonic() + 60
    while len(store.get_teacher_responses(ds, spec.teacher_key())) < at_least:
        assert proc.poll() is None, "the worker ended before it could be killed"
        assert time.monotonic() < deadline, "no answers saved within 60 s"
        time.sleep(0.02)


def test_faults_and_a_killed_worker_lose_nothing_and_duplicate_nothing(
    cleanup_processes: Store, faulty_teacher: tuple[str, list[dict[str, Any]]]
) -> None:
    store = cleanup_processes
    url, examples = faulty_teacher
    spec = fault_spec(url)
    spec_dict = spec.model_dump(mode="json")
    with store.tx() as conn:
        exp_id = store.add_experiment(conn, spec.name, spec_dict, spec.fingerprint())
        first_job = store.add_job(conn, "teacher", {"experiment": spec_dict}, experiment_id=exp_id)
    ds = ensure_dataset(store, spec)
    scope = teacher_job.cache_scope(spec, store.home)
    t = spec.teacher
    hashes = [
        request_hash(scope, t.model, build_messages(spec.task, e["input"]), t.temperature, t.max_tokens)
        for e in examples
    ]
    keys = {prompt_key(e["prompt"]): h for e, h in zip(examples, hashes, strict=True)}
    cache = store.home / "llm_cache.db"

    # --- first worker: killed with SIGKILL once some answers are saved
    proc = spawn(store, first_job)
    wait_for_saved_answers(store, spec, ds, 16, proc)
    time.sleep(0.4)  # between two flushes: some answers are cached but not yet saved
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    time.sleep(0.5)  # let the server finish the requests that were in flight at the kill
    before = server_stats(url)["answers_per_prompt"]
    cached_before = cached_keys(cache, hashes)
    saved_before = store.get_teacher_responses(ds, spec.teacher_key())
    assert 16 <= len(saved_before) < N, "the kill must land mid-job"
    assert {r["request_hash"] for r in saved_before.values()} <= cached_before  # cache first, then store
    assert jobs.reconcile(store) == [first_job]  # the dead worker's job is marked failed

    # --- second worker: a new job for the same experiment finishes the work
    second_job = store.enqueue("teacher", {"experiment": spec_dict}, experiment_id=exp_id)
    assert spawn(store, second_job).wait(timeout=120) == 0
    job = store.get_job(second_job)
    assert job is not None and job["status"] == "succeeded", job

    stats = server_stats(url)
    after = stats["answers_per_prompt"]
    assert stats["faults_429"] > 0 and stats["faults_500"] > 0 and stats["faults_timeout"] > 0

    # Every prompt answered exactly once in the store and in the cache; nothing lost.
    answers = store.get_teacher_responses(ds, spec.teacher_key())
    assert sorted(answers) == [e["idx"] for e in examples]
    assert all(a["error"] is None for a in answers.values())
    assert [answers[e["idx"]]["output"] for e in examples] == [e["reference"] for e in examples]
    assert cached_keys(cache, hashes) == set(hashes)
    with sqlite3.connect(cache) as conn:
        assert conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0] == N

    # No prompt whose answer had reached the cache before the kill was asked again. The only
    # prompts answered twice are those whose answer was on the wire when the worker died.
    lost_in_flight = {k for k, h in keys.items() if before.get(k, 0) >= 1 and h not in cached_before}
    assert len(lost_in_flight) <= spec.teacher.concurrency
    for k, h in keys.items():
        if h in cached_before:
            assert after[k] == before[k] == 1, k
        else:
            assert after[k] == 1 + (k in lost_in_flight), k

    # The resumed job asked only for what was not saved, and got cached answers for free.
    summary = json.loads((store.experiments_dir / exp_id / "teacher_summary.json").read_text())
    assert summary["requested"] == N - len(saved_before)
    assert summary["cached"] == len(cached_before) - len(saved_before)
    assert summary["answered"] == summary["requested"] and summary["errors"] == 0
