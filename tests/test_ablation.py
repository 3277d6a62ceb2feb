"""Curve maths and experiment launch."""

from __future__ import annotations

import pytest

from engine import ablation
from engine.specs import ExperimentSpec, demo_spec
from engine.store import Store


def test_power_law_fit_recovers_parameters() -> None:
    sizes = [25, 50, 100, 200, 400, 800]
    truth = {"a": 2.0, "b": 0.5, "c": 0.9}
    values = [truth["c"] - truth["a"] * n ** -truth["b"] for n in sizes]
    fit = ablation.fit_power_law(sizes, values)
    assert fit is not None
    assert fit["c"] == pytest.approx(0.9, abs=1e-3)
    assert fit["b"] == pytest.approx(0.5, abs=1e-2)
    assert fit["rmse"] < 1e-4


def test_fit_of_a_bounded_metric_never_extrapolates_past_one() -> None:
    # The standard demo's curve: an unconstrained fit predicts 1.01 at n=3200.
    fit = ablation.fit_power_law([50, 200, 800], [0.265, 0.6125, 0.85])
    assert fit is not None and fit["c"] <= 1.0
    curve = ablation.Curve(
        metric="m", sizes=[50, 200, 800], mean=[0.265, 0.6125, 0.85], std=[0] * 3, n_seeds=[1] * 3, fit=fit
    )
    assert curve.predict(3200) <= 1.0
    assert curve.predict(800) == pytest.approx(0.85, abs=0.05)


def test_fit_needs_three_sizes() -> None:
    assert ablation.fit_power_law([10, 20], [0.1, 0.2]) is None


def test_marginal_gain_and_summary_line() -> None:
    c = ablation.Curve(metric="m", sizes=[100, 300], mean=[0.5, 0.7], std=[0, 0], n_seeds=[1, 1])
    assert c.marginal_per_100() == [None, pytest.approx(0.1)]
    assert c.summary_line() == "curve m: 100=0.5000 300=0.7000"


def test_launch_queues_teacher_then_one_train_job_per_cell(store: Store) -> None:
    spec = demo_spec("fast").model_copy(
        update={
            "ablation": ExperimentSpec().ablation.model_copy(
                update={"train_sizes": [16, 64], "seeds": [0, 1]}
            )
        }
    )
    exp_id = ablation.launch_experiment(store, spec)
    jobs = store.list_jobs(experiment_id=exp_id)
    teacher = [j for j in jobs if j["kind"] == "teacher"]
    train = [j for j in jobs if j["kind"] == "train"]
    assert len(teacher) == 1 and len(train) == 4
    assert all(j["depends_on"] == [teacher[0]["id"]] for j in train)
    runs = store.list_runs(exp_id)
    assert sorted((r["train_size"], r["seed"]) for r in runs) == [(16, 0), (16, 1), (64, 0), (64, 1)]
    assert all(r["status"] == "queued" for r in runs)
    assert ablation.experiment_status(store, exp_id) == "queued"


def test_curve_averages_seeds_of_finished_runs(store: Store) -> None:
    spec = demo_spec("fast")
    exp_id = ablation.launch_experiment(store, spec)
    for run in store.list_runs(exp_id):
        store.finish_job(run["job_id"], "succeeded")
        store.set_run_metrics(run["id"], {"field_accuracy": run["train_size"] / 100})
    curve = ablation.experiment_curve(store, exp_id)
    assert curve.metric == "field_accuracy"
    assert curve.sizes == [16, 64]
    assert curve.mean == [pytest.approx(0.16), pytest.approx(0.64)]
