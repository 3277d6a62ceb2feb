"""Each recipe end to end in the train job: gold, sft, sft+dpo, kd, sft+kd (a few steps each)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine import ablation
from engine.context import JobContext
from engine.data.datasets import dataset_hash
from engine.demo.source import demo_rows
from engine.specs import ExperimentSpec, SpecError, TeacherSpec, TinyModelSpec, demo_spec
from engine.store import Store
from engine.training import job as train_job
from engine.training.metadata import hash_indices
from engine.training.pools import gold_pool
from engine.training.student import build_tiny_student
from tests.actors import ADMIN

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def kd_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local teacher folder: a (briefly untrained) wider Llama with its own tokenizer."""
    rows = demo_rows(demo_spec("fast"))
    texts = [r["prompt"] for r in rows] + [r["reference"] for r in rows]
    tiny = TinyModelSpec(hidden_size=96, num_layers=3, num_heads=4, vocab_size=384)
    return build_tiny_student(texts, tiny, tmp_path_factory.mktemp("kd-teacher"), seed=5)


def _spec(recipe: str, teacher: Path) -> ExperimentSpec:
    spec = demo_spec("fast")
    spec.teacher = TeacherSpec(kind="local", model=str(teacher), max_tokens=64)
    spec.student.max_steps = 10
    spec.student.logging_steps = 2
    spec.student.recipe = recipe  # type: ignore[assignment]
    spec.student.kd.lmbda = 0.25
    spec.student.dpo.max_steps = 4
    spec.student.dpo.max_pairs = 8
    spec.data.test_size = 12
    return ExperimentSpec.model_validate(spec.model_dump())


def _setup(store: Store, spec: ExperimentSpec, answers: bool = True) -> tuple[str, str]:
    """A stored dataset, answered by a perfect teacher when ``answers``."""
    rows = demo_rows(spec)
    task = spec.task.model_dump(mode="json")
    ds_id = store.save_dataset("demo", dataset_hash(task, rows), task, rows)
    if answers:
        store.save_teacher_responses(
            ds_id,
            spec.teacher_key(),
            [{"idx": r["idx"], "request_hash": "h", "output": r["reference"], "valid": 1} for r in rows],
        )
    with store.tx() as conn:
        exp_id = store.add_experiment(conn, spec.name, spec.model_dump(mode="json"), spec.fingerprint())
    store.set_experiment_dataset(exp_id, ds_id)
    return exp_id, ds_id


def _run(store: Store, spec: ExperimentSpec, exp_id: str, size: int = 32) -> dict[str, Any]:
    with store.tx() as conn:
        run_id = store.add_run(conn, exp_id, size, 0)
        job_spec = {"experiment": spec.model_dump(mode="json"), "train_size": size, "seed": 0}
        job_id = store.add_job(conn, "train", job_spec, experiment_id=exp_id, run_id=run_id)
        store.link_run_job(conn, run_id, job_id)
    job = store.get_job(job_id)
    assert job is not None
    train_job.main(JobContext(store=store, job=job, spec=job["spec"]))
    run = store.get_run(run_id)
    assert run is not None
    return run


def _falls(store: Store, run_id: str, name: str) -> bool:
    values = [p["value"] for p in store.metric_series([run_id], name)]
    assert len(values) >= 2, (name, values)
    return values[-1] < values[0]


@pytest.mark.parametrize("recipe", ["gold", "sft", "sft+dpo", "kd", "sft+kd"])
def test_each_recipes_training_loss_falls(
    store: Store, kd_teacher: Path, monkeypatch: pytest.MonkeyPatch, recipe: str
) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    spec = _spec(recipe, kd_teacher)
    exp_id, _ = _setup(store, spec)
    run = _run(store, spec, exp_id)
    assert _falls(store, run["id"], "loss")  # SFT's cross-entropy, or KD's divergence for kd
    metrics = run["metrics"]
    assert metrics["train_steps"] >= spec.student.max_steps and "field_accuracy" in metrics
    meta = json.loads((Path(run["run_dir"]) / "metadata.json").read_text())
    assert meta["train"]["recipe"] == recipe
    if recipe == "sft+kd":  # KD continues the SFT curve after its steps
        assert _falls(store, run["id"], "kd/loss")
        kd_points = store.metric_series([run["id"]], "kd/loss")
        assert kd_points[0]["step"] > spec.student.max_steps
    if recipe in ("kd", "sft+kd"):
        assert meta["train"]["kd"]["on_policy_batches"] + meta["train"]["kd"]["forced_batches"] > 0
        assert any(e["kind"] == "kd_done" for e in store.list_events(run_id=run["id"]))
        # The tiny student was built with the teacher's tokenizer: the vocabularies are one.
        base = json.loads((store.experiments_dir / exp_id / "base_model" / "tokenizer.json").read_text())
        teacher = json.loads((kd_teacher / "tokenizer.json").read_text())
        assert base["model"]["vocab"] == teacher["model"]["vocab"]
    if recipe == "sft+dpo":
        assert store.metric_series([run["id"]], "dpo/loss")
    # What `demo --recipes` prints as `loss [<recipe>]: ...`: each stage's loss, first to last.
    ((value, stages),) = ablation.variant_losses(store, exp_id)
    assert value is None and [s.stage for s in stages] == {"kd": ["kd"], "sft+kd": ["sft", "kd"]}.get(
        recipe, ["sft"]
    )
    assert all(s.fell and s.runs == 1 for s in stages)


def test_gold_trains_on_references_without_any_teacher_answer(
    store: Store, kd_teacher: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    spec = _spec("gold", kd_teacher)
    exp_id, ds_id = _setup(store, spec, answers=False)
    pool = gold_pool(store, ds_id, spec)
    refs = {ex["idx"]: ex["reference"] for ex in store.get_examples(ds_id, "train")}
    assert len(pool) == len(refs) and all(r["completion"] == refs[r["idx"]] for r in pool)
    run = _run(store, spec, exp_id, size=24)
    meta = json.loads((Path(run["run_dir"]) / "metadata.json").read_text())
    assert meta["data"]["train_indices_hash"] == hash_indices([r["idx"] for r in pool[:24]])
    assert meta["data"]["teacher_key"] is None
    assert _falls(store, run["id"], "loss")
    # An sft run of the same experiment has nothing to train on.
    with pytest.raises(RuntimeError, match="no usable teacher answers"):
        _run(store, _spec("sft", kd_teacher), exp_id)


def test_the_teacher_job_asks_nothing_for_gold(store: Store, kd_teacher: Path) -> None:
    from engine.teacher import job as teacher_job

    spec = _spec("gold", kd_teacher)
    with store.tx() as conn:
        exp_id = store.add_experiment(conn, spec.name, spec.model_dump(mode="json"), spec.fingerprint())
        job_id = store.add_job(
            conn, "teacher", {"experiment": spec.model_dump(mode="json")}, experiment_id=exp_id
        )
    job = store.get_job(job_id)
    assert job is not None
    teacher_job.main(JobContext(store=store, job=job, spec=job["spec"]))
    exp = store.get_experiment(exp_id)
    assert exp is not None and exp["dataset_id"]
    assert store.get_teacher_responses(exp["dataset_id"], spec.teacher_key()) == {}
    summary = json.loads((store.experiments_dir / exp_id / "teacher_summary.json").read_text())
    assert summary["requested"] == 0


def test_kd_launch_refuses_a_teacher_that_is_not_a_folder(store: Store, kd_teacher: Path) -> None:
    spec = _spec("kd", kd_teacher)
    spec.teacher.model = str(kd_teacher / "missing")
    with pytest.raises(SpecError, match=r"teacher\.model: student\.recipe kd distils a local model folder"):
        ablation.launch_experiment(store, spec, actor=ADMIN)
    assert store.list_experiments() == []


def test_the_demo_kd_teacher_is_trained_once_and_the_recipes_spec_uses_it(store: Store) -> None:
    from engine.demo.kd_teacher import RECIPES, demo_recipes_spec, ensure_demo_kd_teacher

    said: list[str] = []
    folder = ensure_demo_kd_teacher(store, demo_spec("fast"), steps=2, log=said.append)
    assert (folder / "config.json").exists() and folder.parent == store.home / "demo"
    assert ensure_demo_kd_teacher(store, demo_spec("fast"), steps=2, log=said.append) == folder
    assert len(said) == 2  # "training ..." and its loss, once: the second call found it cached
    spec = demo_recipes_spec(folder, "fast")
    assert spec.teacher.kind == "local" and spec.teacher.model == str(folder)
    assert spec.ablation.vary == {"student.recipe": RECIPES} and spec.ablation.seeds == [0]
    two = demo_recipes_spec(folder, "fast", ["gold", "kd"])
    assert two.ablation.vary == {"student.recipe": ["gold", "kd"]}
    with pytest.raises(SpecError, match=r"ablation\.vary: student\.recipe='distil'"):
        demo_recipes_spec(folder, "fast", ["gold", "distil"])
