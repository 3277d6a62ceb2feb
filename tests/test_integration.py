"""End to end: a 2-size ablation on the tiny student, through the scheduler and subprocess
workers, exactly as the dashboard's demo button runs it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine import ablation
from engine.specs import demo_spec
from engine.store import TERMINAL, Store
from tests.actors import ADMIN

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("cleanup_processes")]


def test_two_size_ablation_end_to_end(store: Store) -> None:
    spec = demo_spec("fast")
    spec.ablation.versus_teacher = True  # each run then faces its teacher (pairwise, demo judge)
    exp_id = ablation.launch_experiment(store, spec, actor=ADMIN)
    subprocess.Popen(
        [sys.executable, "-m", "engine", "--home", str(store.home), "scheduler"],
        cwd=Path(__file__).resolve().parent.parent,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        job_rows = store.list_jobs(experiment_id=exp_id)
        if all(j["status"] in TERMINAL for j in job_rows):
            break
        time.sleep(0.5)
    failed = {j["id"]: (j["status"], j["error"]) for j in job_rows if j["status"] != "succeeded"}
    assert not failed, failed

    exp = store.get_experiment(exp_id)
    dataset_id = exp["dataset_id"]
    test_idx = {e["idx"] for e in store.get_examples(dataset_id, "test")}
    assert len(test_idx) == spec.data.test_size
    assert len(store.get_teacher_responses(dataset_id, spec.teacher_key())) == spec.data.demo_examples

    runs = store.list_runs(exp_id)
    assert sorted(r["train_size"] for r in runs) == spec.ablation.train_sizes
    for run in runs:
        outputs = store.list_outputs(run["id"])
        assert {o["idx"] for o in outputs} == test_idx  # every run scored on the same frozen split
        assert "field_accuracy" in run["metrics"]
        losses = [p["value"] for p in store.metric_series([run["id"]], "loss")]
        assert losses and losses[-1] < losses[0]
        meta = json.loads((Path(run["run_dir"]) / "metadata.json").read_text())
        assert meta["train_size"] == run["train_size"]

    from engine.judges.pairwise import versus_teacher

    versus = versus_teacher(store, exp_id)
    assert [r["train_size"] for r in versus] == spec.ablation.train_sizes
    assert all(r["pairs"] == spec.data.test_size and 0 <= r["student_score"] <= 1 for r in versus)

    curve = ablation.experiment_curve(store, exp_id)
    assert curve.sizes == spec.ablation.train_sizes
    assert curve.teacher is not None and curve.teacher > 0.5
    assert curve.summary_line().startswith("curve field_accuracy: 16=")
