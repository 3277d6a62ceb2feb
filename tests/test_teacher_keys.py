"""Teacher answers are keyed on what determines them, not on where the teacher is served.

Moving the endpoint to another port (or host) re-pays nothing; ``teacher.name`` says "the
same model under another model name"; and a workspace written before this change (keys and
request hashes that hashed ``base_url``) keeps its answers through migration 0004.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.demo.simulated_teacher import start_demo_teacher
from engine.specs import ExperimentSpec, TeacherSpec, demo_spec
from engine.store import Store
from engine.teacher import job as teacher_job
from engine.teacher.cache import cached_keys
from tests.test_teacher_job import dataset_of, make_ctx, summary

FIXTURE = Path(__file__).parent / "data" / "workspace_v1"


def dead_url() -> str:
    """A loopback URL nobody listens on (the port was just free)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


@pytest.fixture
def live_url(store: Store) -> Iterator[str]:
    """The simulated teacher, answering the fast demo's prompts."""
    from engine.data.datasets import ensure_dataset

    examples = store.get_examples(ensure_dataset(store, demo_spec("fast")))
    data = store.home / "answers.jsonl"
    data.write_text(
        "".join(json.dumps({"prompt": e["prompt"], "reference": e["reference"]}) + "\n" for e in examples)
    )
    with start_demo_teacher(data, error_rate=0.0) as url:
        yield url


def endpoint_spec(url: str, **teacher: Any) -> ExperimentSpec:
    return demo_spec("fast").model_copy(
        update={"teacher": TeacherSpec(base_url=url, max_retries=0, timeout_s=5, **teacher)}
    )


def test_a_moved_endpoint_and_a_renamed_model_reuse_every_answer(store: Store, live_url: str) -> None:
    first = endpoint_spec(live_url, model="demo-teacher", name="ticket-teacher-v1")
    ctx = make_ctx(store, first)
    teacher_job.main(ctx)
    assert summary(ctx)["answered"] == summary(ctx)["http_requests"] == 140
    assert summary(ctx)["endpoint"] == live_url  # the URL stays as metadata

    # Another port, and the same model served under another model name: nothing is asked
    # (the new URL is dead, so any request would fail the job).
    moved = endpoint_spec(dead_url(), model="/models/teacher-v1", name="ticket-teacher-v1")
    assert moved.teacher_key() == first.teacher_key()
    ctx = make_ctx(store, moved)
    teacher_job.main(ctx)
    assert summary(ctx)["requested"] == 0 and summary(ctx)["http_requests"] == 0
    answers = store.get_teacher_responses(dataset_of(ctx), moved.teacher_key())
    assert len(answers) == 140 and all(a["error"] is None for a in answers.values())

    # Losing the stored answers costs nothing either: the cache is keyed the same way.
    with store.tx() as conn:
        conn.execute("DELETE FROM teacher_responses")
    teacher_job.main(ctx)
    assert summary(ctx)["cached"] == 140 and summary(ctx)["http_requests"] == 0

    # Another model (a different name) is another teacher: it is asked again.
    other = endpoint_spec(live_url, model="demo-teacher", name="ticket-teacher-v2")
    assert other.teacher_key() != first.teacher_key()
    ctx = make_ctx(store, other)
    teacher_job.main(ctx)
    assert summary(ctx)["http_requests"] == 140


def _legacy_key(spec: dict[str, Any]) -> str:
    """``ExperimentSpec.teacher_key`` as it was up to schema 3 (base_url included)."""
    t, task = spec["teacher"], spec["task"]
    ident = {
        "kind": t["kind"],
        "base_url": t["base_url"],
        "model": t["model"],
        "temperature": t["temperature"],
        "max_tokens": t["max_tokens"],
        "system_prompt": task["system_prompt"],
        "prompt_template": task["prompt_template"],
    }
    if t["kind"] == "demo":
        ident.update(error_rate=t["demo_error_rate"], seed=spec["data"]["seed"])
    blob = json.dumps(ident, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _legacy_request_hash(spec: dict[str, Any], input_text: str) -> str:
    """An endpoint teacher's request hash up to schema 3: scoped by its base URL."""
    t, task = spec["teacher"], spec["task"]
    messages = [
        {"role": "system", "content": task["system_prompt"]},
        {"role": "user", "content": task["prompt_template"].format(input=input_text)},
    ]
    request = {
        "scope": t["base_url"].rstrip("/"),
        "model": t["model"],
        "messages": messages,
        "temperature": t["temperature"],
        "max_tokens": t["max_tokens"],
    }
    blob = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


@pytest.fixture
def old_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "old"
    shutil.copytree(FIXTURE, home)
    monkeypatch.setenv("SENSEI_HOME", str(home))
    return home


def test_an_old_workspace_keeps_its_demo_teacher_answers(old_home: Path) -> None:
    with sqlite3.connect(old_home / "sensei.db") as conn:  # as the old release left it
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
        (spec_json,) = conn.execute("SELECT spec_json FROM experiments").fetchone()
        before = dict(conn.execute("SELECT idx, output FROM teacher_responses").fetchall())
        (old_key,) = {r[0] for r in conn.execute("SELECT teacher_key FROM teacher_responses")}
    assert old_key == _legacy_key(json.loads(spec_json)) and len(before) == 140

    store = Store(old_home)
    (exp,) = store.list_experiments()
    spec = ExperimentSpec.model_validate(exp["spec"])
    assert spec.teacher_key() != old_key
    answers = store.get_teacher_responses(exp["dataset_id"], spec.teacher_key())
    assert {i: a["output"] for i, a in answers.items()} == before

    # The teacher job finds all of them: it asks for nothing.
    job_id = store.enqueue("teacher", {"experiment": exp["spec"]}, experiment_id=exp["id"])
    from engine.context import JobContext

    job = store.get_job(job_id)
    assert job is not None
    teacher_job.main(JobContext(store=store, job=job, spec=job["spec"]))
    s = json.loads((store.experiments_dir / exp["id"] / "teacher_summary.json").read_text())
    assert s["requested"] == 0 and s["http_requests"] == 0


def test_an_old_workspace_keeps_its_endpoint_teacher_answers_labels_and_cache(old_home: Path) -> None:
    """An ``openai``-kind experiment written by the old release, then its endpoint moves."""
    db = old_home / "sensei.db"
    with sqlite3.connect(db) as conn:
        (spec_json, dataset_id) = conn.execute("SELECT spec_json, dataset_id FROM experiments").fetchone()
        spec = json.loads(spec_json)
        spec["teacher"].update(kind="openai", base_url="http://127.0.0.1:8000/v1/", model="demo-teacher")
        key = _legacy_key(spec)
        inputs = dict(conn.execute("SELECT idx, input FROM examples WHERE dataset_id=?", (dataset_id,)))
        conn.execute(
            "INSERT INTO experiments(id, name, spec_json, spec_hash, created_at, dataset_id)"
            " VALUES ('exp-old-endpoint', 'endpoint', ?, 'x', 1, ?)",
            (json.dumps(spec), dataset_id),
        )
        conn.execute(
            "INSERT INTO teacher_responses SELECT dataset_id, ?, idx, ?, output, valid, input_tokens,"
            " output_tokens, latency_s, cost_usd, error, created_at FROM teacher_responses",
            (key, "placeholder"),
        )
        for idx, text in inputs.items():  # each answer with the request hash the old job gave it
            conn.execute(
                "UPDATE teacher_responses SET request_hash=? WHERE teacher_key=? AND idx=?",
                (_legacy_request_hash(spec, text), key, idx),
            )
        conn.execute(
            "INSERT INTO annotations(item_ref, annotator, label, ts) VALUES (?, 'sme', 'reject', 1)",
            (f"teacher:{dataset_id}:{key}:7",),
        )
        conn.execute(
            "INSERT INTO judge_verdicts(judge_name, item_ref, verdict, ts) VALUES ('j', ?, 'accept', 1)",
            (f"teacher:{dataset_id}:{key}:8",),
        )
    # A prompt answered and cached, but never saved (the old job was killed in between).
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM teacher_responses WHERE teacher_key=? AND idx=9", (key,))
    legacy_cache = [_legacy_request_hash(spec, inputs[9])]
    from engine.teacher.cache import cache_put, open_cache

    cache = open_cache(old_home / "llm_cache.db")
    cache_put(cache, legacy_cache[0], '{"cached": true}', 10, 5, 0.1, "stop")
    assert cache is not None
    cache.close()

    store = Store(old_home)
    exp = store.get_experiment("exp-old-endpoint")
    assert exp is not None
    moved = ExperimentSpec.model_validate(exp["spec"]).model_copy(deep=True)
    moved.teacher.base_url = dead_url()  # the endpoint moved: the old answers must still count
    new_key = moved.teacher_key()
    assert new_key != key
    assert len(store.get_teacher_responses(dataset_id, new_key)) == 139
    assert [a["item_ref"] for a in store.annotations()][-1] == f"teacher:{dataset_id}:{new_key}:7"
    assert f"teacher:{dataset_id}:{new_key}:8" in {v["item_ref"] for v in store.list_judge_verdicts("j")}

    from engine.context import JobContext

    spec_dict = moved.model_dump(mode="json")
    job_id = store.enqueue("teacher", {"experiment": spec_dict}, experiment_id=exp["id"])
    job = store.get_job(job_id)
    assert job is not None
    teacher_job.main(JobContext(store=store, job=job, spec=job["spec"]))
    s = json.loads((store.experiments_dir / exp["id"] / "teacher_summary.json").read_text())
    assert s["requested"] == 1 and s["cached"] == 1 and s["http_requests"] == 0  # prompt 9, from the cache
    answers = store.get_teacher_responses(dataset_id, new_key)
    assert len(answers) == 140 and answers[9]["output"] == '{"cached": true}'
    assert len(cached_keys(old_home / "llm_cache.db", [answers[9]["request_hash"]])) == 1
