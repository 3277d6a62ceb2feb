"""Turn an experiment's data spec into a stored, content-hashed dataset."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from engine.data.demo_source import demo_rows
from engine.specs import ExperimentSpec
from engine.store import Store

DATASET_FORMAT = 1
"""Bump when the meaning of a row changes, so old hashes never match new content."""


def dataset_hash(task: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """sha256 of the task and every row (split included), in canonical JSON.

    The task is part of the identity because the dataset row stores it (``task_json``): two
    experiments whose prompts agree but whose answer format differs must not share a dataset.
    """
    blob = json.dumps(
        {"format": DATASET_FORMAT, "task": task, "rows": rows},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def ensure_dataset(store: Store, spec: ExperimentSpec) -> str:
    """Build the experiment's dataset, or find the identical one already stored.

    Args:
        store: the workspace.
        spec: the experiment; ``spec.data.source`` picks the source.

    Returns:
        The dataset id (an existing one when the content hash matches).
    """
    if spec.data.source == "demo":
        rows = demo_rows(spec)
        name = f"demo-{spec.data.demo_examples}-seed{spec.data.seed}"
    else:  # pragma: no cover - the spec only allows "demo" for now
        raise ValueError(f"data.source {spec.data.source!r} is not supported")
    task = spec.task.model_dump(mode="json")
    return store.save_dataset(name, dataset_hash(task, rows), task, rows)
