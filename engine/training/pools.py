"""What a run trains on: its train pool (teacher answers, or references for ``gold``) and
its tiny base model.

Pools share one shuffled order per experiment (``data.seed``), so the first ``n`` rows are the
same for every run and a larger size always contains the smaller ones.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from engine.judges.curation import CurationResult, curate
from engine.specs import ExperimentSpec, TaskSpec
from engine.store import Store
from engine.training.model_refs import resolve_model_ref
from engine.training.student import ensure_tiny_base


def _is_valid(task: TaskSpec, response: dict[str, Any]) -> bool:
    """Whether a teacher answer passed validation (re-checked when the teacher job did not say)."""
    if response.get("valid") is not None:
        return bool(response["valid"])
    from engine.data import parse_output

    return bool(parse_output(task, response["output"])[0])


def training_pool(
    store: Store, dataset_id: str, spec: ExperimentSpec, curation: CurationResult | None = None
) -> list[dict[str, Any]]:
    """The experiment's train pool in its one shuffled order, with the teacher's answers.

    The order depends only on ``spec.data.seed``, so the first ``n`` rows are the same for
    every run and a larger size always contains the smaller ones. Rows without a teacher
    answer (or with an invalid one, when ``data.require_valid_output``, or one that curation
    drops, see :mod:`engine.judges.curation`) are dropped after the shuffle, which keeps that nesting
    intact. ``curation`` is computed from ``spec.curation`` when not given.

    Returns:
        ``{"idx", "prompt", "completion"}`` dicts.
    """
    examples = store.get_examples(dataset_id, "train")
    random.Random(spec.data.seed).shuffle(examples)
    answers = store.get_teacher_responses(dataset_id, spec.teacher_key())
    kept = set((curation or curate(store, spec, dataset_id)).kept_indices)
    pool = []
    for ex in examples:
        response = answers.get(ex["idx"])
        if not response or not (response.get("output") or "").strip():
            continue
        if spec.data.require_valid_output and not _is_valid(spec.task, response):
            continue
        if ex["idx"] not in kept:
            continue
        pool.append({"idx": ex["idx"], "prompt": ex["prompt"], "completion": response["output"].strip()})
    return pool


def gold_pool(store: Store, dataset_id: str, spec: ExperimentSpec) -> list[dict[str, Any]]:
    """The train pool of the ``gold`` recipe: the same shuffled order as :func:`training_pool`,
    with each example's own reference answer (examples without one are dropped)."""
    examples = store.get_examples(dataset_id, "train")
    random.Random(spec.data.seed).shuffle(examples)
    return [
        {"idx": ex["idx"], "prompt": ex["prompt"], "completion": ex["reference"].strip()}
        for ex in examples
        if (ex["reference"] or "").strip()
    ]


def tiny_base(store: Store, exp_id: str, dataset_id: str, spec: ExperimentSpec) -> Path:
    """The experiment's tiny base model for this cell, built once and shared by its runs.

    Its tokenizer is trained on the experiment's own spec's texts (prompts and the teacher's
    answers; references when there are none), not the cell's, so every value of
    ``ablation.vary`` starts from the same weights. When any value distils token by token
    (``kd``, ``sft+kd``), the base takes the local teacher's tokenizer instead: KD needs a
    shared vocabulary. A varied tiny architecture gets one base per architecture.
    """
    from engine.specs import spec_hash

    experiment = store.get_experiment(exp_id)
    exp_spec = ExperimentSpec.model_validate(experiment["spec"]) if experiment else spec
    tiny = spec.student.tiny
    name = "base_model" if tiny == exp_spec.student.tiny else f"base_model-{spec_hash(tiny.model_dump())}"
    if (store.experiments_dir / exp_id / name / "config.json").exists():
        return store.experiments_dir / exp_id / name
    tokenizer = None
    if any(r.student.uses_kd for _, r in exp_spec.variant_specs()):
        from transformers import AutoTokenizer

        teacher = resolve_model_ref(store, spec.teacher.model, "teacher.model")  # a crafted row too
        tokenizer = AutoTokenizer.from_pretrained(teacher)
    pool = training_pool(store, dataset_id, exp_spec) or gold_pool(store, dataset_id, exp_spec)
    texts = [r["prompt"] for r in pool] + [r["completion"] for r in pool]
    return ensure_tiny_base(store, exp_id, texts, tiny, seed=spec.data.seed, tokenizer=tokenizer, name=name)
