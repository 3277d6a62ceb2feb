"""Growing a finished experiment: only the new cells train, and the teacher is not asked again.

The teacher is the simulated one on 127.0.0.1, called as any OpenAI-compatible endpoint, so
its ``/stats`` counts every request it gets: the count must not move while the new cells run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from engine import ablation
from engine.data.datasets import ensure_dataset
from engine.demo.simulated_teacher import start_demo_teacher
from engine.specs import AblationSpec, DataSpec, ExperimentSpec, TeacherSpec, demo_spec
from engine.store import TERMINAL, Store
from tests.actors import ADMIN

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("cleanup_processes")]
ROOT = Path(__file__).resolve().parents[1]


def _spec(base_url: str) -> ExperimentSpec:
    return demo_spec("fast").model_copy(
        update={
            "data": DataSpec(demo_examples=60, test_size=10),
            "teacher": TeacherSpec(base_url=base_url, model="demo-teacher"),
            "ablation": AblationSpec(train_sizes=[16], seeds=[0], zero_shot=False),
        }
    )


def _run_to_the_end(store: Store, exp_id: str) -> None:
    subprocess.Popen(
        [sys.executable, "-m", "engine", "--home", str(store.home), "scheduler", "--idle-exit", "5"],
        cwd=ROOT,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        rows = store.list_jobs(experiment_id=exp_id)
        if all(j["status"] in TERMINAL for j in rows):
            break
        time.sleep(0.5)
    failed = {j["id"]: j["error"] for j in rows if j["status"] != "succeeded"}
    assert not failed, failed


def test_extend_trains_only_new_cells_without_a_teacher_request(store: Store, tmp_path: Path) -> None:
    examples = store.get_examples(ensure_dataset(store, _spec("http://placeholder/v1")))
    data = tmp_path / "answers.jsonl"
    data.write_text(
        "".join(json.dumps({"prompt": e["prompt"], "reference": e["reference"]}) + "\n" for e in examples)
    )
    with start_demo_teacher(data, error_rate=0.0) as url:
        stats = url.removesuffix("/v1") + "/stats"
        exp_id = ablation.launch_experiment(store, _spec(url), actor=ADMIN)
        _run_to_the_end(store, exp_id)
        asked = httpx.get(stats, trust_env=False, timeout=10).json()["requests"]
        assert asked == len(examples)
        first = {(r["train_size"], r["seed"]): r["job_id"] for r in store.list_runs(exp_id)}

        new_runs = ablation.extend_experiment(store, exp_id, sizes=[32], actor=ADMIN)
        assert len(new_runs) == 1  # (32, 0); seeds grow the same way (see test_curve)
        _run_to_the_end(store, exp_id)

        assert httpx.get(stats, trust_env=False, timeout=10).json()["requests"] == asked
    runs = {(r["train_size"], r["seed"]): r for r in store.list_runs(exp_id)}
    assert set(runs) == {(16, 0), (32, 0)}
    assert runs[(16, 0)]["job_id"] == first[(16, 0)]  # the finished cell did not run again
    train_jobs = [j for j in store.list_jobs(experiment_id=exp_id) if j["kind"] == "train"]
    assert len(train_jobs) == 2 and all(r["status"] == "succeeded" for r in runs.values())
    assert [j["kind"] for j in store.list_jobs(experiment_id=exp_id)].count("teacher") == 1
    curve = ablation.experiment_curve(store, exp_id)
    assert curve is not None and curve.sizes == [16, 32] and curve.n_seeds == [1, 1]
