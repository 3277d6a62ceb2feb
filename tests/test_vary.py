"""Recipes and ``ablation.vary``: specs, cells per value, one curve per value, the diff."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine import ablation
from engine.__main__ import main as cli
from engine.ablation.compare import variant_overlay
from engine.specs import ExperimentSpec, SpecError, demo_spec, load_spec, parse_spec, variant_key
from engine.store import Store
from tests.actors import ADMIN


def _vary(spec: ExperimentSpec, vary: dict[str, list[Any]]) -> ExperimentSpec:
    data = spec.model_dump(mode="json")
    data["ablation"]["vary"] = vary
    return parse_spec(data)


def test_recipe_defaults_to_sft_and_old_dpo_specs_keep_their_stage() -> None:
    spec = ExperimentSpec()
    assert spec.student.recipe == "sft" and not spec.student.uses_dpo and not spec.student.uses_kd
    old = load_spec("student:\n  dpo:\n    enabled: true\n")
    assert old.student.recipe == "sft" and old.student.effective_recipe == "sft+dpo" and old.student.uses_dpo
    assert load_spec("student:\n  recipe: sft+dpo\n").student.uses_dpo


@pytest.mark.parametrize(
    ("yaml_text", "words"),
    [
        ("student:\n  recipe: kd\n", ["student.recipe: kd", "teacher.kind: local"]),
        ("student:\n  recipe: sft+kd\n", ["student.recipe: sft+kd", "endpoint"]),
        ("student:\n  recipe: kd\n  dpo:\n    enabled: true\n", ["dpo.enabled"]),
        ("student:\n  kd:\n    lmbda: 1.5\n", ["student.kd.lmbda"]),
        ("ablation:\n  vary:\n    data.seed: [0, 1]\n", ["ablation.vary: data.seed", "test split"]),
        ("ablation:\n  vary:\n    student.lora: [1, 2]\n", ["ablation.vary: student.lora is a section"]),
        ("ablation:\n  vary:\n    student.nope: [1, 2]\n", ["ablation.vary: student.nope"]),
        ("ablation:\n  vary:\n    student.recipe: [sft]\n", ["ablation.vary", "at least two"]),
        ("ablation:\n  vary:\n    student.recipe: [sft, sft]\n", ["ablation.vary", "unique"]),
        ("ablation:\n  vary:\n    student.recipe: [sft, kd]\n", ["ablation.vary: student.recipe='kd'"]),
        ("ablation:\n  vary:\n    student.max_steps: [1, 2]\n    student.seed: [1, 2]\n", ["one setting"]),
    ],
)
def test_bad_recipes_and_vary_name_the_field(yaml_text: str, words: list[str]) -> None:
    with pytest.raises(SpecError) as err:
        load_spec(yaml_text)
    for word in words:
        assert word in str(err.value)


def test_each_value_resolves_to_a_spec_with_nothing_left_to_vary() -> None:
    spec = _vary(demo_spec("fast"), {"student.recipe": ["gold", "sft"]})
    assert spec.vary_path() == "student.recipe"
    resolved = dict(spec.variant_specs())
    assert list(resolved) == ['"gold"', '"sft"']
    assert resolved['"gold"'].student.recipe == "gold" and resolved['"gold"'].ablation.vary == {}
    assert demo_spec("fast").variant_specs() == [(None, demo_spec("fast"))]


def _finish(store: Store, exp_id: str, spec: ExperimentSpec, score: dict[str, float]) -> None:
    """Finish every run with per-example scores: ``score[variant] + size / 1000``."""
    from engine.data.datasets import ensure_dataset

    dataset_id = ensure_dataset(store, spec)
    store.set_experiment_dataset(exp_id, dataset_id)
    test = store.get_examples(dataset_id, "test")
    answers = [
        {"idx": ex["idx"], "request_hash": "h", "output": ex["reference"], "valid": True}
        for ex in store.get_examples(dataset_id)
    ]
    store.save_teacher_responses(dataset_id, spec.teacher_key(), answers)
    for run in store.list_runs(exp_id):
        p = score[run["variant_value"]] + run["train_size"] / 1000
        rows = [
            {"idx": ex["idx"], "prompt": ex["prompt"], "output": "", "reference": ex["reference"],
             "scores": {"field_accuracy": p}}
            for ex in test
        ]  # fmt: skip
        store.save_outputs(run["id"], rows)
        store.set_run_metrics(run["id"], {"field_accuracy": p})
        store.finish_job(run["job_id"], "succeeded")


def test_a_vary_experiment_runs_each_cell_per_value_and_overlays_one_curve_per_value(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = _vary(demo_spec("fast"), {"student.learning_rate": [0.003, 0.01]})
    spec.ablation.seeds = [0, 1]
    exp_id = ablation.launch_experiment(store, spec, actor=ADMIN)

    jobs = store.list_jobs(experiment_id=exp_id)
    teacher = [j for j in jobs if j["kind"] == "teacher"]
    train = [j for j in jobs if j["kind"] == "train"]
    assert len(teacher) == 1  # the teacher does not vary: its answers are shared
    assert len(train) == 2 * 2 * 2  # sizes x seeds x values
    assert all(j["depends_on"] == [teacher[0]["id"]] for j in train)
    cells = sorted((r["train_size"], r["seed"], r["variant_value"]) for r in store.list_runs(exp_id))
    assert cells == sorted((n, s, variant_key(v)) for n in (16, 64) for s in (0, 1) for v in (0.003, 0.01))
    # Each train job trains with its own value and says which one it is.
    for job in train:
        value = job["spec"]["variant"]["value"]
        assert job["spec"]["variant"]["path"] == "student.learning_rate"
        assert job["spec"]["experiment"]["student"]["learning_rate"] == value

    _finish(store, exp_id, spec, {"0.003": 0.5, "0.01": 0.7})
    low = ablation.experiment_curve(store, exp_id, variant=0.003)
    high = ablation.experiment_curve(store, exp_id, variant=0.01)
    assert low is not None and high is not None
    assert low.mean == [pytest.approx(0.516), pytest.approx(0.564)] and low.n_seeds == [2, 2]
    assert high.mean == [pytest.approx(0.716), pytest.approx(0.764)]

    ov = variant_overlay(store, exp_id)
    assert list(ov.curves) == ["0.003", "0.01"] and ov.base == "0.003"
    assert ov.labels == {"0.003": "0.003", "0.01": "0.01"}
    assert ov.diffs == {"0.01": [("student.learning_rate", 0.003, 0.01)]}
    assert ov.warnings() == []

    assert cli(["--home", str(store.home), "curve", exp_id]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2:] == [
        "curve field_accuracy [0.003]: 16=0.5160 64=0.5640",
        "curve field_accuracy [0.01]: 16=0.7160 64=0.7640",
    ]


def test_recipes_vary_with_a_zero_shot_run_per_value(store: Store) -> None:
    spec = _vary(demo_spec("fast"), {"student.recipe": ["gold", "sft"]})
    spec.ablation.zero_shot = True
    exp_id = ablation.launch_experiment(store, spec, actor=ADMIN)
    cells = {(r["train_size"], r["variant_value"]) for r in store.list_runs(exp_id)}
    assert cells == {(n, v) for n in (0, 16, 64) for v in ('"gold"', '"sft"')}
    _finish(store, exp_id, spec, {'"gold"': 0.6, '"sft"': 0.4})
    ov = variant_overlay(store, exp_id)
    assert ov.labels == {'"gold"': "gold", '"sft"': "sft"}
    assert ov.diffs == {'"sft"': [("student.recipe", "gold", "sft")]}
    assert ov.curves['"gold"'].baselines["zero_shot"] == pytest.approx(0.6)
    # Growing the experiment adds the new size for every value, and nothing twice.
    new = ablation.extend_experiment(store, exp_id, sizes=[32], actor=ADMIN)
    assert len(new) == 2
    assert ablation.extend_experiment(store, exp_id, sizes=[32], actor=ADMIN) == []


def test_a_varied_teacher_gets_a_teacher_job_per_value(store: Store) -> None:
    spec = _vary(demo_spec("fast"), {"teacher.demo_error_rate": [0.0, 0.3]})
    exp_id = ablation.launch_experiment(store, spec, actor=ADMIN)
    jobs = store.list_jobs(experiment_id=exp_id)
    teachers = {j["id"]: j for j in jobs if j["kind"] == "teacher"}
    assert len(teachers) == 2
    for job in (j for j in jobs if j["kind"] == "train"):
        (dep,) = job["depends_on"]
        rate = teachers[dep]["spec"]["experiment"]["teacher"]["demo_error_rate"]
        assert rate == job["spec"]["variant"]["value"]


def test_an_old_workspace_gains_the_variant_column(tmp_path: Path) -> None:
    import shutil

    from engine.store.migrations import MIGRATIONS

    shutil.copytree(Path(__file__).parent / "data" / "workspace_v1", tmp_path / "old")
    store = Store(tmp_path / "old")
    assert "0007_run_variant" in [name for name, _ in MIGRATIONS]  # later ones may follow
    (exp,) = store.list_experiments()
    runs = store.list_runs(exp["id"])
    assert runs and all(r["variant_value"] is None for r in runs)
    curve = ablation.experiment_curve(store, exp["id"])
    assert curve is not None and curve.sizes == [16, 64]
    # A run of an experiment that varies nothing has no value; curves of all runs are as before.
    assert ablation.variant_curves(store, exp["id"])[0][0] is None


def test_the_launch_form_edits_recipe_kd_and_vary() -> None:
    from engine.ui import launch_form

    spec = _vary(demo_spec("fast"), {"student.learning_rate": [0.003, 0.01]})
    values = launch_form.form_defaults(spec)
    assert values["ablation.vary"] == "student.learning_rate: 0.003, 0.01"
    assert values["student.recipe"] == "sft" and values["student.kd.max_steps"] == ""
    assert launch_form.spec_from_form(values, spec) == spec
    changed = launch_form.spec_from_form(values | {"ablation.vary": "student.recipe: gold, sft+dpo"}, spec)
    assert changed.ablation.vary == {"student.recipe": ["gold", "sft+dpo"]}
    assert launch_form.spec_from_form(values | {"ablation.vary": " "}, spec).ablation.vary == {}
    with pytest.raises(SpecError, match=r"ablation\.vary: expected 'setting: value, value'"):
        launch_form.spec_from_form(values | {"ablation.vary": "student.recipe"}, spec)


def test_the_ablation_page_draws_one_curve_per_value(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("SENSEI_HOME", str(store.home))
    spec = _vary(demo_spec("fast"), {"student.recipe": ["gold", "sft"]})
    exp_id = ablation.launch_experiment(store, spec, actor=ADMIN)
    _finish(store, exp_id, spec, {'"gold"': 0.6, '"sft"': 0.4})
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"), default_timeout=60).run()
    at.switch_page("views/ablation.py").run()
    assert not at.exception, [e.value for e in at.exception]
    captions = "\n".join(str(c.value) for c in at.caption)
    assert "curve field_accuracy [gold]: 16=0.6160 64=0.6640" in captions
    assert "curve field_accuracy [sft]: 16=0.4160 64=0.4640" in captions
    figure = at.get("plotly_chart")[0].proto.spec
    assert "gold (95% interval)" in figure and "sft (95% interval)" in figure


def test_the_launch_page_has_widgets_for_recipe_kd_and_vary(store: Store) -> None:
    from tests.test_pages import app

    at = app("views/launch.py")
    at.text_input(key="f.ablation.train_sizes").set_value("16, 32")
    at.text_input(key="f.ablation.seeds").set_value("0")
    at.selectbox(key="f.student.recipe").set_value("gold")
    at.number_input(key="f.student.kd.lmbda").set_value(0.25)
    at.number_input(key="f.student.kd.beta").set_value(0.1)
    at.number_input(key="f.student.kd.temperature").set_value(2.0)
    at.text_input(key="f.student.kd.max_steps").set_value("30")
    at.text_input(key="f.ablation.vary").set_value("student.recipe: gold, kd")
    at.button(key="form_launch").click().run()
    assert "ablation.vary: student.recipe='kd' is refused" in at.error[0].value and store.list_jobs() == []

    at.text_input(key="f.ablation.vary").set_value("student.recipe: gold, sft")
    at.button(key="form_launch").click().run()
    assert not at.error, [e.value for e in at.error]
    (exp,) = store.list_experiments()
    student = exp["spec"]["student"]
    assert student["recipe"] == "gold" and exp["spec"]["ablation"]["vary"] == {
        "student.recipe": ["gold", "sft"]
    }
    assert student["kd"] == {"lmbda": 0.25, "beta": 0.1, "temperature": 2.0, "max_steps": 30}
    runs = store.list_runs(exp["id"])
    assert sorted((r["train_size"], r["variant_value"]) for r in runs) == [
        (n, v) for n in (0, 16, 32) for v in ('"gold"', '"sft"')
    ]
