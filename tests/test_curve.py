"""The marginal-utility curve: intervals, validated fits, baselines, target, next size, JSON."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from engine import ablation
from engine.__main__ import main as cli
from engine.ablation.curve import majority_answer, point_interval
from engine.specs import ExperimentSpec, demo_spec, parse_spec
from engine.store import Store
from tests.actors import ADMIN
from tests.curve_data import finished_experiment

pytestmark = pytest.mark.both_backends  # the store tests run on SQLite and PostgreSQL


def truth(n: np.ndarray | float) -> np.ndarray | float:
    return 0.9 - 2.0 * np.asarray(n, float) ** -0.5


def test_band_covers_the_truth_at_a_held_out_size_in_90_of_100_draws() -> None:
    rng = np.random.default_rng(0)
    sizes = np.array([25.0, 50, 100, 200, 400])
    held_out = 800.0
    sd = 0.015
    covered = fitted = 0
    for _ in range(100):
        values = truth(sizes) + rng.normal(0.0, sd, len(sizes))
        cf = ablation.choose_fit(sizes, values, [sd] * len(sizes))
        if cf.fit is None:
            continue
        fitted += 1
        lo, hi = cf.fit.band(held_out)
        covered += bool(lo[0] <= truth(held_out) <= hi[0])
    assert fitted >= 95
    assert covered >= 90


def test_a_flat_curve_is_no_trend_and_predicts_nothing() -> None:
    cf = ablation.choose_fit([50, 100, 200, 400, 800], [0.5, 0.52, 0.49, 0.51, 0.5], [0.01] * 5)
    assert cf.fit is None and cf.reason is not None and cf.reason.startswith("no trend")
    rng = np.random.default_rng(3)
    flat = [
        ablation.choose_fit([50, 100, 200, 400, 800], 0.6 + rng.normal(0, 0.01, 5), [0.01] * 5)
        for _ in range(40)
    ]
    assert sum(c.fit is None for c in flat) >= 36  # a 5% test: a few false trends are expected


def test_the_fallen_round_one_curve_is_not_a_trend() -> None:
    # Measured in round 1 on a public data set: the curve fell, and a flat power law was shown.
    cf = ablation.choose_fit([50, 200, 800, 2000], [0.953, 0.938, 0.889, 0.953], [0.01] * 4)
    assert cf.fit is None and "no trend" in (cf.reason or "")


def test_held_out_validation_is_reported() -> None:
    sizes = [50, 100, 200, 400, 800]
    cf = ablation.choose_fit(sizes, [float(truth(n)) for n in sizes], [0.01] * 5)
    assert cf.fit is not None and cf.heldout_size == 800
    assert cf.inside_band is True and abs(cf.heldout_error or 1) < 0.02
    assert {c["family"] for c in cf.candidates} >= {"inverse_power", "log_linear"}


def test_point_interval_one_seed_is_the_example_bootstrap_and_seeds_add_their_spread() -> None:
    rng = np.random.default_rng(0)
    one = [{i: float(rng.random() < 0.6) for i in range(200)}]
    mean, lo, hi = point_interval(one)
    assert lo < mean < hi and 0.05 < hi - lo < 0.2  # never a zero-width interval
    far_apart = [{i: float(rng.random() < p) for i in range(200)} for p in (0.3, 0.6, 0.9)]
    _, lo3, hi3 = point_interval(far_apart)
    assert hi3 - lo3 > hi - lo


def test_majority_answer_of_labels_and_json_fields() -> None:
    spec = demo_spec("fast")
    refs = ['{"a": "x", "b": 1}', '{"a": "x", "b": 2}', '{"a": "y", "b": 2}']
    assert json.loads(majority_answer(spec, refs) or "") == {"a": "x", "b": 2}
    label = spec.model_copy(
        update={"task": spec.task.model_copy(update={"output_kind": "label", "labels": ["ham", "spam"]})}
    )
    assert majority_answer(label, ["ham", "spam", "ham"]) == "ham"


def test_curve_json_has_intervals_baselines_fit_and_next_size(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    exp_id = finished_experiment(store, [8, 16, 32, 64, 110], [0, 1, 2])
    assert cli(["--home", str(store.home), "curve", exp_id, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["metric"] == "field_accuracy" and "exact_match" in out["metrics"]
    assert [p["size"] for p in out["points"]] == [8, 16, 32, 64, 110]
    for p in out["points"]:
        assert p["n_seeds"] == 3 and p["ci_low"] < p["mean"] < p["ci_high"]
    assert set(out["baselines"]) >= {"teacher", "zero_shot", "majority"}
    assert out["baselines"]["teacher"] == pytest.approx(1.0)
    assert out["next_size"]["size"] is not None or "pool" in out["next_size"]["reason"]
    if out["fit"]:
        assert out["fit"]["heldout_size"] == 110 and isinstance(out["fit"]["inside_band"], bool)
    else:
        assert out["no_fit_reason"]
    assert out["teacher_cost_per_example"] == pytest.approx(0.001)
    # Any metric of the runs can be asked for; an unknown one is refused by name.
    assert cli(["--home", str(store.home), "curve", exp_id, "--json", "--metric", "exact_match"]) == 0
    assert json.loads(capsys.readouterr().out)["metric"] == "exact_match"
    assert cli(["--home", str(store.home), "curve", exp_id, "--metric", "nope"]) == 2
    assert "no metric 'nope'" in capsys.readouterr().err


def test_target_size_cost_and_marginal_from_a_fit() -> None:
    sizes = [50, 100, 200, 400, 800]
    points = [
        ablation.Point(n, float(truth(n)), float(truth(n)) - 0.02, float(truth(n)) + 0.02, 3, [])
        for n in sizes
    ]
    curve = ablation.Curve(
        metric="m", points=points, baselines={"teacher": 0.9}, teacher_cost_per_example=0.001, pool=800
    )
    curve.curve_fit = ablation.choose_fit(sizes, curve.mean, [p.stderr for p in points])
    assert curve.fit is not None
    goal = curve.to_target("95%")
    assert goal is not None and goal["target"] == pytest.approx(0.855)
    expected = (2.0 / (0.9 - 0.855)) ** 2  # truth reaches 0.855 at n = (a / (c - y))^(1/b)
    assert goal["size"] == pytest.approx(expected, rel=0.35)
    assert goal["ci_low"] <= goal["size"] and (goal["ci_high"] is None or goal["ci_high"] >= goal["size"])
    assert goal["teacher_usd"] == pytest.approx(goal["size"] * 0.001, rel=1e-3)
    marginal = curve.marginal()
    assert (
        marginal is not None
        and marginal["per_1000_examples"]["gain"] > marginal["per_10_percent"]["gain"] > 0
    )
    assert curve.next_size("95%")["size"] is None  # the pool of 800 is used up
    curve.pool = None
    assert curve.next_size("95%")["size"] in {1200, 1600, 2400, 3200}


def test_no_fit_suggests_the_next_doubling() -> None:
    curve = ablation.Curve(metric="m", points=[ablation.Point(50, 0.5, 0.45, 0.55, 1, [0.5])], pool=1000)
    curve.curve_fit = ablation.choose_fit([50], [0.5])
    assert curve.next_size() == {
        "size": 100,
        "reason": "no fit holds yet: the next doubling adds the most information",
    }


def test_status_counts_only_the_newest_job_of_a_resumed_run(store: Store) -> None:
    from engine.training.resume import resume_job

    spec = demo_spec("fast")
    exp_id = ablation.launch_experiment(store, spec, actor=ADMIN)
    runs = store.list_runs(exp_id)
    store.finish_job(runs[0]["job_id"], "failed", error="killed")
    for job in store.list_jobs(experiment_id=exp_id):
        store.finish_job(job["id"], "succeeded")
    assert ablation.experiment_status(store, exp_id) == "failed"
    new_job = resume_job(store, runs[0]["id"], actor=ADMIN)
    store.finish_job(new_job, "succeeded")
    assert ablation.experiment_status(store, exp_id) == "succeeded"


def test_extend_adds_only_missing_cells_and_refuses_beyond_the_pool(store: Store) -> None:
    exp_id = finished_experiment(store, [8, 16], [0])
    before = {(r["train_size"], r["seed"]) for r in store.list_runs(exp_id)}
    new_runs = ablation.extend_experiment(store, exp_id, sizes=[16, 32], seeds=[1], actor=ADMIN)
    after = {(r["train_size"], r["seed"]) for r in store.list_runs(exp_id)}
    assert after - before == {(32, 0), (8, 1), (16, 1), (32, 1)} and len(new_runs) == 4
    spec = ExperimentSpec.model_validate(store.get_experiment(exp_id)["spec"])
    assert spec.ablation.train_sizes == [8, 16, 32] and spec.ablation.seeds == [0, 1]
    assert ablation.extend_experiment(store, exp_id, sizes=[32], actor=ADMIN) == []
    queued = [j for j in store.list_jobs(experiment_id=exp_id) if j["status"] == "queued"]
    assert {j["kind"] for j in queued} == {"train"}  # no second teacher job: answers are reused
    with pytest.raises(
        ValueError, match=r"exceed the pool of 120 usable teacher answers; 380 more .*\$0\.38"
    ):
        ablation.extend_experiment(store, exp_id, sizes=[500], actor=ADMIN)


def test_a_version_1_spec_keeps_its_fixed_steps() -> None:
    old = demo_spec("standard").model_dump(mode="json")
    old["version"] = 1
    del old["student"]["budget"]
    del old["ablation"]["zero_shot"]
    spec = parse_spec(old)
    assert spec.student.budget == "steps" and spec.ablation.zero_shot is False
    assert demo_spec().student.budget == "early_stop" and demo_spec().ablation.seeds == [0, 1, 2]
    assert len(demo_spec().ablation.train_sizes) >= 4


def test_launch_refuses_sizes_beyond_a_datasets_pool(store: Store) -> None:
    from engine.data.importing import import_dataset  # noqa: F401  (the dataset path)
    from engine.specs import SpecError

    exp_id = finished_experiment(store, [8], [0])
    dataset_id = store.get_experiment(exp_id)["dataset_id"]
    data = demo_spec("fast").model_dump(mode="json")
    data["data"].update(source="dataset", dataset=dataset_id)
    data["ablation"]["train_sizes"] = [54, 500]
    spec = parse_spec(data)
    with pytest.raises(SpecError, match=r"ablation.train_sizes: \[500\] exceed the 120 training examples"):
        ablation.launch_experiment(store, spec, actor=ADMIN)
    assert math.isfinite(1.0)
