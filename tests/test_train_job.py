"""The train job end to end in-process: data selection, training, saving, evaluation, records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from engine.context import JobContext
from engine.data.datasets import dataset_hash
from engine.demo.source import demo_rows
from engine.specs import ExperimentSpec, demo_spec
from engine.store import Store
from engine.training import job as train_job
from engine.training.student import load_student

pytestmark = pytest.mark.slow


def _setup(store: Store, spec: ExperimentSpec, invalid: set[int] = frozenset()) -> tuple[str, str]:
    """A stored dataset answered by a perfect teacher (except ``invalid`` indices)."""
    rows = demo_rows(spec)
    task = spec.task.model_dump(mode="json")
    ds_id = store.save_dataset("demo", dataset_hash(task, rows), task, rows)
    store.save_teacher_responses(
        ds_id,
        spec.teacher_key(),
        [
            {
                "idx": r["idx"],
                "request_hash": f"h{r['idx']}",
                "output": "Sure! " + r["reference"] if r["idx"] in invalid else r["reference"],
                "valid": int(r["idx"] not in invalid),
            }
            for r in rows
        ],
    )
    with store.tx() as conn:
        exp_id = store.add_experiment(conn, spec.name, spec.model_dump(mode="json"), spec.fingerprint())
    store.set_experiment_dataset(exp_id, ds_id)
    return exp_id, ds_id


def _run_job(store: Store, spec: ExperimentSpec, exp_id: str, size: int, seed: int = 0) -> dict[str, Any]:
    job_spec = {"experiment": spec.model_dump(mode="json"), "train_size": size, "seed": seed}
    with store.tx() as conn:
        run_id = store.add_run(conn, exp_id, size, seed)
        job_id = store.add_job(conn, "train", job_spec, experiment_id=exp_id, run_id=run_id)
        store.link_run_job(conn, run_id, job_id)
    job = store.get_job(job_id)
    assert job is not None
    train_job.main(JobContext(store=store, job=job, spec=job["spec"]))
    run = store.get_run(run_id)
    assert run is not None
    return run


def test_train_job_records_everything(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")  # W&B offline costs seconds; covered below
    spec = demo_spec("fast")
    spec.student.max_steps = 80
    exp_id, ds_id = _setup(store, spec, invalid={0, 1, 2, 3, 4, 5})
    run = _run_job(store, spec, exp_id, size=32)
    run_dir = Path(run["run_dir"])

    outputs = store.list_outputs(run["id"])
    test_idx = [e["idx"] for e in store.get_examples(ds_id, "test")]
    assert [o["idx"] for o in outputs] == test_idx
    assert all(set(o["scores"]) >= {"exact_match", "json_valid", "field_accuracy", "fuzzy"} for o in outputs)

    metrics = run["metrics"]
    for key in ("field_accuracy", "json_valid", "exact_match", "train_loss", "train_time_s", "tokens_per_s"):
        assert key in metrics
    assert metrics["n"] == spec.data.test_size and metrics["n_train"] == 32
    assert metrics["json_valid"] > 0  # 20 steps already teach the braces

    losses = store.metric_series([run["id"]], "loss")
    assert len(losses) == spec.student.max_steps // spec.student.logging_steps
    assert losses[-1]["value"] < losses[0]["value"]
    assert store.metric_series([run["id"]], "learning_rate")

    meta = json.loads((run_dir / "metadata.json").read_text())
    assert meta["train_size"] == 32 and meta["seed"] == 0 and meta["lora"] is None
    assert meta["base_model"]["kind"] == "local" and len(meta["base_model"]["content_hash"]) == 64
    assert meta["data"]["dataset_hash"] == store.get_dataset(ds_id)["content_hash"]
    assert meta["data"]["n_train"] == 32 and meta["libraries"]["trl"]
    assert meta["train"]["steps"] == spec.student.max_steps and meta["train"]["tokens_seen"] > 0
    resolved = json.loads((run_dir / "spec.json").read_text())
    assert resolved["train_size"] == 32 and resolved["experiment"]["student"]["max_steps"] == 80

    # The saved model reloads and answers exactly what was scored.
    model, tok = load_student(run_dir / "model")
    from engine.training.generate import generate

    again = generate(model, tok, [outputs[0]["prompt"]], spec.student.max_new_tokens)
    assert again == [outputs[0]["output"]]
    assert (store.experiments_dir / exp_id / "base_model" / "config.json").exists()
    assert sorted(p.name for p in run_dir.iterdir()) == ["metadata.json", "model", "spec.json"]


def test_pool_is_nested_and_skips_invalid(store: Store) -> None:
    spec = demo_spec("fast")
    _, ds_id = _setup(store, spec, invalid={3, 7})
    pool = train_job.training_pool(store, ds_id, spec)
    train_idx = {e["idx"] for e in store.get_examples(ds_id, "train")}
    assert {r["idx"] for r in pool} == train_idx - {3, 7}
    assert [r["idx"] for r in pool] != sorted(r["idx"] for r in pool)  # shuffled
    assert train_job.training_pool(store, ds_id, spec) == pool  # one order for every run
    spec.data.require_valid_output = False
    assert len(train_job.training_pool(store, ds_id, spec)) == len(train_idx)


def test_short_pool_warns_and_missing_dataset_fails(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = demo_spec("fast")
    spec.student.max_steps = 2
    spec.student.logging_steps = 1
    spec.teacher.api_key_env = "SENSEI_TEST_KEY"  # a key in the environment, its NAME in the spec
    monkeypatch.setenv("SENSEI_TEST_KEY", "PLANTED-WANDB-SECRET")
    monkeypatch.setenv("SENSEI_KEY_ENVS", "SENSEI_TEST_KEY")  # declared by the admin
    exp_id, _ = _setup(store, spec)
    run = _run_job(store, spec, exp_id, size=10_000)
    kinds = {e["kind"] for e in store.list_events(run_id=run["id"])}
    assert "train_size_short" in kinds
    assert run["metrics"]["n_train"] == spec.data.demo_examples - spec.data.test_size
    # W&B ran offline inside the workspace (WANDB_MODE=offline from conftest); its run file
    # holds the resolved spec as config and the training metrics, and no secret.
    runs = list((store.home / "wandb").glob("**/offline-run-*/run-*.wandb"))
    assert len(runs) == 1
    blob = runs[0].read_bytes()
    assert b"train_size" in blob and b"learning_rate" in blob  # config
    assert b"train/loss" in blob and b"field_accuracy" in blob  # metrics and eval summary
    assert b"PLANTED-WANDB-SECRET" not in blob

    with store.tx() as conn:
        lonely = store.add_experiment(conn, "x", spec.model_dump(mode="json"), "h")
    with pytest.raises(RuntimeError, match="teacher job must finish"):
        _run_job(store, spec, lonely, size=4)


def test_tracking_env_and_secret_scrubbing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.training import tracking

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_DIR", raising=False)
    env = tracking.wandb_env(tmp_path)
    assert env["WANDB_MODE"] == "offline" and env["WANDB_DIR"] == str(tmp_path / "wandb")
    monkeypatch.setenv("WANDB_API_KEY", "x")
    assert tracking.wandb_env(tmp_path)["WANDB_MODE"] == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert tracking.report_to() == []

    config = {
        "teacher": {"api_key_env": "OPENAI_API_KEY", "model": "m"},
        "hf_token": "t",
        "lr": [1, {"secret": 2}],
    }
    assert tracking.safe_config(config) == {"teacher": {"model": "m"}, "lr": [1, {}]}


def test_sample_generations_table() -> None:
    from engine.training import tracking

    logged: list[dict[str, Any]] = []

    class Run:
        def log(self, data: dict[str, Any]) -> None:
            logged.append(data)

    tracking.log_generations(None, [{"prompt": "p", "output": "o", "reference": "r"}])  # no run: no-op
    rows = [{"prompt": f"p{i}", "output": f"o{i}", "reference": None} for i in range(5)]
    tracking.log_generations(Run(), rows, limit=3)
    (entry,) = logged
    table = entry["eval/samples"]
    assert table.columns == ["prompt", "output", "reference"]
    assert [r[0] for r in table.data] == ["p0", "p1", "p2"]
