"""Curves side by side: which experiments may share a plot, and what differs between them.

Two curves compare only when they measure the same thing: the same task and the same frozen
test split. Anything else is refused with the reason. The spec diff names every parameter that
differs; when more than one does, the overlay cannot say which of them made the difference,
and a warning says so.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from engine.ablation.curve import Curve, experiment_curve, variant_curves
from engine.specs import ExperimentSpec, SpecError, spec_diff, variant_key
from engine.store import Store

IGNORED = ("name", "version", "ablation.train_sizes", "ablation.seeds", "ablation.zero_shot")
"""Spec paths that do not make two curves different recipes (the grid is the x axis)."""


@dataclass
class Overlay:
    """The curves of several experiments that can share a plot."""

    base: str
    curves: dict[str, Curve] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    """Experiments left out, with the reason."""
    diffs: dict[str, list[tuple[str, Any, Any]]] = field(default_factory=dict)
    """For each other experiment: ``(spec path, base value, its value)``."""

    def warnings(self) -> list[str]:
        """One line per compared experiment that differs in more than one parameter."""
        out = []
        for exp_id, diff in self.diffs.items():
            if len(diff) > 1:
                names = ", ".join(k for k, _, _ in diff)
                out.append(
                    f"{self.labels[exp_id]} differs from {self.labels[self.base]} in {len(diff)} parameters "
                    f"({names}): the overlay cannot tell which one made the difference"
                )
        return out


def test_split_hash(store: Store, dataset_id: str | None) -> str | None:
    """A hash of a dataset's frozen test split (prompts and references)."""
    if not dataset_id:
        return None
    rows = [(ex["prompt"], ex["reference"]) for ex in store.get_examples(dataset_id, "test")]
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()[:16]


def comparable(store: Store, a: dict[str, Any], b: dict[str, Any]) -> str | None:
    """Why experiment rows ``a`` and ``b`` cannot share a curve plot (None when they can)."""
    spec_a, spec_b = ExperimentSpec.model_validate(a["spec"]), ExperimentSpec.model_validate(b["spec"])
    task_a, task_b = spec_a.task.model_dump(), spec_b.task.model_dump()
    if task_a["output_kind"] != task_b["output_kind"] or task_a.get("json_fields") != task_b.get(
        "json_fields"
    ):
        return "a different task (answer kind or fields)"
    hash_a = test_split_hash(store, a.get("dataset_id"))
    hash_b = test_split_hash(store, b.get("dataset_id"))
    if hash_a is None or hash_b is None:
        return "its test split does not exist yet (the teacher job has not built the dataset)"
    if hash_a != hash_b:
        return "a different test split: scores on different test examples do not compare"
    return None


def recipe_diff(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """Every spec parameter in which experiment ``b`` differs from ``a`` (the grid aside)."""
    return [d for d in spec_diff(a["spec"], b["spec"]) if d[0] not in IGNORED]


def overlay(store: Store, base: str, others: list[str], metric: str | None = None) -> Overlay:
    """The curves of ``base`` and every comparable experiment of ``others`` (on ``metric``).

    Raises:
        KeyError: ``base`` is not an experiment of this workspace.
    """
    rows = {e["id"]: e for e in store.list_experiments()}
    if base not in rows:
        raise KeyError(f"no experiment {base}")
    base_row = rows[base]
    metric = metric or ExperimentSpec.model_validate(base_row["spec"]).curve_metric()
    out = Overlay(base=base)
    for exp_id in [base, *[o for o in others if o != base]]:
        row = rows.get(exp_id)
        if row is None:
            out.refused[exp_id] = "no such experiment in this workspace"
            continue
        if exp_id != base and (why := comparable(store, base_row, row)):
            out.refused[exp_id] = why
            continue
        curve = experiment_curve(store, exp_id, metric=metric)
        if curve is None:
            continue
        if exp_id != base and metric not in curve.metrics and curve.points == []:
            out.refused[exp_id] = f"no finished run has {metric}"
            continue
        out.curves[exp_id] = curve
        out.labels[exp_id] = f"{row['name']} · {exp_id[-6:]}"
        if exp_id != base:
            out.diffs[exp_id] = recipe_diff(base_row, row)
    return out


def varies(store: Store, exp_id: str) -> bool:
    """Whether experiment ``exp_id`` varies a setting (``ablation.vary``)."""
    row = store.get_experiment(exp_id)
    return bool(row and ExperimentSpec.model_validate(row["spec"]).vary_path())


def variant_overlay(store: Store, exp_id: str, metric: str | None = None) -> Overlay:
    """One curve per value of experiment ``exp_id``'s ``ablation.vary``, as an :class:`Overlay`.

    Keys are the values' :func:`engine.specs.variant_key` texts, labels the values themselves
    (``kd``, ``0.003``); the first value is the base, and every other value's diff names
    exactly the varied path, ``[(path, base value, its value)]``. All values share the
    experiment's data and test split, so none is refused.

    Raises:
        KeyError: no such experiment.
        engine.specs.SpecError: the experiment varies nothing (use :func:`overlay`).
    """
    row = store.get_experiment(exp_id)
    if row is None:
        raise KeyError(f"no experiment {exp_id}")
    spec = ExperimentSpec.model_validate(row["spec"])
    path = spec.vary_path()
    if path is None:
        raise SpecError(f"ablation.vary: experiment {exp_id} varies nothing; overlay experiments instead")
    curves = variant_curves(store, exp_id, metric or spec.curve_metric())
    base_value = spec.ablation.vary[path][0]
    out = Overlay(base=variant_key(base_value))
    for value, curve in curves:
        key = variant_key(value)
        out.curves[key] = curve
        out.labels[key] = value if isinstance(value, str) else json.dumps(value)
        if key != out.base:
            out.diffs[key] = [(path, base_value, value)]
    return out
