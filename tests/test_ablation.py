"""Curve maths and experiment launch."""

from __future__ import annotations

import pytest

from engine import ablation
from engine.specs import ExperimentSpec, demo_spec
from engine.store import Store
from tests.actors import ADMIN


def test_power_law_fit_recovers_parameters() -> None:
    sizes = [25, 50, 100, 200, 400, 800]
    truth = {"a": 2.0, "b": 0.5, "c": 0.9}
    values = [truth["c"] - truth["a"] * n ** -truth["b"] for n in sizes]
    fit = ablation.fit_family("power", sizes, values, [0.005] * 6)
    assert fit is not None and fit.trend
    assert fit.params["c"] == pytest.approx(0.9, abs=2e-3)
    assert fit.params["b"] == pytest.approx(0.5, abs=2e-2)
    assert float(fit.predict(1600)) == pytest.approx(0.9 - 2.0 * 1600**-0.5, abs=2e-3)


def test_fit_of_a_bounded_metric_never_extrapolates_past_one() -> None:
    # The round-1 demo's curve: an unconstrained fit predicts 1.01 at n=3200.
    fit = ablation.fit_family("power", [50, 100, 200, 800], [0.265, 0.45, 0.6125, 0.85], [0.02] * 4)
    assert fit is not None and fit.params["c"] <= 1.0
    assert float(fit.predict(3200)) <= 1.0
    assert float(fit.band(1e6)[1][0]) <= 1.0 + 1e-9


def test_fit_needs_more_sizes_than_parameters() -> None:
    assert ablation.fit_family("power", [10, 20, 40], [0.1, 0.2, 0.3]) is None
    assert ablation.fit_family("log_linear", [10, 20], [0.1, 0.2]) is None
    three = ablation.choose_fit([10, 20, 40], [0.1, 0.2, 0.3], [0.01] * 3)
    assert three.fit is None and "at least 4 sizes" in (three.reason or "")


def _curve(sizes: list[int], means: list[float]) -> ablation.Curve:
    points = [ablation.Point(n, m, m - 0.01, m + 0.01, 1, [m]) for n, m in zip(sizes, means, strict=True)]
    return ablation.Curve(metric="m", points=points)


def test_marginal_gain_and_summary_line() -> None:
    c = _curve([100, 300], [0.5, 0.7])
    assert c.marginal_per_100() == [None, pytest.approx(0.1)]
    assert c.summary_line() == "curve m: 100=0.5000 300=0.7000"


def test_launch_queues_teacher_then_one_train_job_per_cell(store: Store) -> None:
    spec = demo_spec("fast").model_copy(
        update={
            "ablation": ExperimentSpec().ablation.model_copy(
                update={"train_sizes": [16, 64], "seeds": [0, 1], "zero_shot": False}
            )
        }
    )
    exp_id = ablation.launch_experiment(store, spec, actor=ADMIN)
    jobs = store.list_jobs(experiment_id=exp_id)
    teacher = [j for j in jobs if j["kind"] == "teacher"]
    train = [j for j in jobs if j["kind"] == "train"]
    assert len(teacher) == 1 and len(train) == 4
    assert all(j["depends_on"] == [teacher[0]["id"]] for j in train)
    runs = store.list_runs(exp_id)
    assert sorted((r["train_size"], r["seed"]) for r in runs) == [(16, 0), (16, 1), (64, 0), (64, 1)]
    assert all(r["status"] == "queued" for r in runs)
    assert ablation.experiment_status(store, exp_id) == "queued"


def test_zero_shot_adds_one_untrained_run(store: Store) -> None:
    spec = demo_spec("fast")
    spec.ablation.zero_shot = True
    exp_id = ablation.launch_experiment(store, spec, actor=ADMIN)
    cells = sorted((r["train_size"], r["seed"]) for r in store.list_runs(exp_id))
    assert cells == [(0, 0), (16, 0), (64, 0)]


def test_curve_averages_seeds_of_finished_runs(store: Store) -> None:
    spec = demo_spec("fast")
    exp_id = ablation.launch_experiment(store, spec, actor=ADMIN)
    for run in store.list_runs(exp_id):
        store.finish_job(run["job_id"], "succeeded")
        store.set_run_metrics(run["id"], {"field_accuracy": run["train_size"] / 100})
    curve = ablation.experiment_curve(store, exp_id)
    assert curve.metric == "field_accuracy"
    assert curve.sizes == [16, 64]
    assert curve.mean == [pytest.approx(0.16), pytest.approx(0.64)]
