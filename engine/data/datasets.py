"""Turn an experiment's data spec into a stored, content-hashed dataset."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from engine.data.prompts import render_prompt
from engine.demo.source import demo_rows
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
    task = spec.task.model_dump(mode="json")
    if spec.data.source == "demo":
        rows = demo_rows(spec)
        name = f"demo-{spec.data.demo_examples}-seed{spec.data.seed}"
    else:
        source = find_dataset(store, str(spec.data.dataset))
        if source["task"] == task:
            return str(source["id"])
        # Same examples and the same frozen split, prompts rendered with this experiment's task:
        # a derived dataset (its own content hash), so training and teacher see the same prompt.
        name = source["name"]
        rows = [
            {
                "idx": ex["idx"],
                "split": ex["split"],
                "input": ex["input"],
                "prompt": render_prompt(spec.task.prompt_template, ex["input"]),
                "reference": ex["reference"],
                "meta": ex.get("meta") or {},
            }
            for ex in store.get_examples(source["id"])
        ]
    return store.save_dataset(name, dataset_hash(task, rows), task, rows)


def find_dataset(store: Store, ref: str) -> dict[str, Any]:
    """A stored dataset by id, else the newest one with that name.

    Raises:
        ValueError: no dataset has that id or name (the message names ``data.dataset``).
    """
    found = store.get_dataset(ref)
    if found is None:
        named = [d for d in store.list_datasets() if d["name"] == ref]  # newest first
        found = named[0] if named else None
    if found is None:
        known = ", ".join(sorted({d["name"] for d in store.list_datasets()})) or "none yet"
        raise ValueError(f"data.dataset: no dataset with id or name {ref!r} (datasets: {known})")
    return found
