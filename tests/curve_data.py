"""A finished experiment written straight into a store, for curve and page tests."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from engine import ablation
from engine.specs import demo_spec, parse_spec
from engine.store import Store
from tests.actors import ADMIN


def finished_experiment(
    store: Store,
    sizes: list[int],
    seeds: list[int],
    score: float = 0.9,
    lr: float | None = None,
    vary: dict[str, list[Any]] | None = None,
) -> str:
    """A demo-fast experiment whose runs finished with per-example scores that rise with size.

    With ``vary`` (``ablation.vary``), each value's runs score 0.1 less than the value before.
    """
    from engine.data.datasets import ensure_dataset

    spec = demo_spec("fast")
    if lr is not None:
        spec.student.learning_rate = lr
    spec.ablation.train_sizes, spec.ablation.seeds, spec.ablation.zero_shot = sizes, seeds, True
    if vary:
        spec = parse_spec(
            spec.model_dump(mode="json") | {"ablation": {**spec.ablation.model_dump(), "vary": vary}}
        )
    offsets = {key: 0.1 * i for i, (key, _) in enumerate(spec.variant_specs())}
    exp_id = ablation.launch_experiment(store, spec, actor=ADMIN)
    dataset_id = ensure_dataset(store, spec)
    store.set_experiment_dataset(exp_id, dataset_id)
    test = store.get_examples(dataset_id, "test")
    store.save_teacher_responses(
        dataset_id,
        spec.teacher_key(),
        [
            {"idx": ex["idx"], "request_hash": f"h{ex['idx']}", "output": ex["reference"], "valid": True}
            for ex in store.get_examples(dataset_id)
        ],
    )
    rng = np.random.default_rng(0)
    for run in store.list_runs(exp_id):
        n = run["train_size"]
        p = 0.05 if n == 0 else score - offsets[run["variant_value"]] - 1.5 * n**-0.5
        rows = [
            {
                "idx": ex["idx"],
                "prompt": ex["prompt"],
                "output": "",
                "reference": ex["reference"],
                "scores": {"field_accuracy": float(rng.random() < p), "exact_match": 0.0},
            }
            for ex in test
        ]
        store.save_outputs(run["id"], rows)
        metrics = {
            "field_accuracy": float(np.mean([r["scores"]["field_accuracy"] for r in rows])),
            "exact_match": 0.0,
        }
        store.set_run_metrics(run["id"], {**metrics, "train_time_s": 2.0 * max(n, 1), "train_steps": 10.0})
        store.finish_job(run["job_id"], "succeeded")
    for job in store.list_jobs(experiment_id=exp_id):
        if job["kind"] == "teacher":
            store.finish_job(job["id"], "succeeded")
    (store.experiments_dir / exp_id).mkdir(parents=True, exist_ok=True)
    (store.experiments_dir / exp_id / "teacher_summary.json").write_text(
        json.dumps({"answered": 140, "cost_usd": 0.14})
    )
    return exp_id
