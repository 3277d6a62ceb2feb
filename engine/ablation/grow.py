"""Grow an experiment: suggest the next size, and add sizes or seeds to a finished grid.

Adding cells reuses the experiment's teacher answers: the new runs read them from the store,
so a size within the pool costs no teacher call. A size beyond the pool is refused with
what growing the pool would cost, measured from the teacher job.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.ablation import fit as fitting
from engine.ablation.grid import add_cells, grid_cells
from engine.access import Actor, Right, check, done
from engine.specs import ExperimentSpec, SpecError, parse_spec
from engine.store import Store
from engine.teacher.keys import check_spec_keys
from engine.training.model_refs import check_spec_models

if TYPE_CHECKING:
    from engine.ablation.curve import Curve

CANDIDATE_FACTORS = (1.5, 2.0, 3.0, 4.0)


def extend_experiment(
    store: Store,
    experiment_id: str,
    sizes: list[int] | None = None,
    seeds: list[int] | None = None,
    *,
    actor: Actor,
) -> list[str]:
    """Add train sizes and/or seeds to an experiment; queue only the cells it lacks.

    The experiment's spec grows to the union of its grid and the new values (so every later
    view and report names them), in the same transaction as the new runs.

    Returns:
        The new run ids (empty when every cell exists already).

    Raises:
        engine.access.AccessDenied: ``actor``'s role may not launch.
        engine.specs.SpecError: unknown experiment, a size beyond the pool of usable teacher
            answers (with the cost of growing it), a spec the new grid makes invalid, a
            teacher key name the server no longer declares, or a model folder outside the
            model roots (:mod:`engine.training.model_refs`).
    """
    from engine.ablation.curve import teacher_cost_per_example, usable_pool

    check(store, actor, Right.LAUNCH, "extend experiments", experiment_id)
    exp = store.get_experiment(experiment_id)
    if exp is None:
        raise SpecError(f"no experiment {experiment_id}")
    spec = ExperimentSpec.model_validate(exp["spec"])
    data = spec.model_dump(mode="json")
    grid = data["ablation"]
    grid["train_sizes"] = sorted(set(grid["train_sizes"]) | set(sizes or []))
    grid["seeds"] = list(dict.fromkeys([*grid["seeds"], *(seeds or [])]))
    # Every value of ablation.vary must fill each size (gold counts references, others answers).
    pools = [usable_pool(store, r, exp.get("dataset_id")) for _, r in spec.variant_specs()]
    pool = min((p for p in pools if p is not None), default=None)
    if pool is not None:
        beyond = [n for n in grid["train_sizes"] if n > pool]
        if beyond:
            per = teacher_cost_per_example(store, experiment_id)
            cost = (
                f" (about ${(max(beyond) - pool) * per:,.2f} at the measured ${per:.5f} per answer)"
                if per
                else ""
            )
            raise SpecError(
                f"ablation.train_sizes: {beyond} exceed the pool of {pool} usable teacher answers; "
                f"{max(beyond) - pool} more prompts would have to be answered{cost}. Launch an "
                "experiment with more data (data.demo_examples or a larger dataset) instead"
            )
    new_spec = parse_spec(data, source=f"extend {experiment_id}")
    check_spec_keys(new_spec)  # new runs may call the teacher (DPO, versus-teacher judging)
    check_spec_models(store, new_spec)  # and load the student (and a KD teacher)
    existing = {(r["train_size"], r["seed"], r.get("variant_value")) for r in store.list_runs(experiment_id)}
    cells = [c for c in grid_cells(new_spec) if tuple(c) not in existing]
    teacher = [j for j in store.list_jobs(experiment_id=experiment_id) if j["kind"] == "teacher"]
    if not teacher:
        raise SpecError(f"experiment {experiment_id} has no teacher job to build on")
    with store.tx() as conn:
        store.set_experiment_spec(
            conn, experiment_id, new_spec.model_dump(mode="json"), new_spec.fingerprint()
        )
        if not cells:
            return []
        runs = add_cells(store, conn, new_spec, experiment_id, _teacher_jobs(new_spec, teacher), cells)
    done(store, actor, "extend", experiment_id, sizes=sizes or [], seeds=seeds or [], runs=len(runs))
    return runs


def _teacher_jobs(spec: ExperimentSpec, jobs: list[dict[str, Any]]) -> dict[str, str]:
    """The newest teacher job of each teacher the spec's values use (``{teacher_key: job id}``)."""
    newest: dict[str, str] = {}
    for job in sorted(jobs, key=lambda j: j["created_at"]):
        job_spec = ExperimentSpec.model_validate(job["spec"]["experiment"])
        for _, resolved in job_spec.variant_specs():
            newest[resolved.teacher_key()] = job["id"]
    fallback = max(jobs, key=lambda j: j["created_at"])["id"]
    return {r.teacher_key(): newest.get(r.teacher_key(), fallback) for _, r in spec.variant_specs()}


def suggest_next_size(curve: Curve, target: str | float | None = None) -> dict[str, Any]:
    """Which size to run next.

    With a fit: among a few larger sizes (x1.5 to x4, within the pool), the one whose point
    would most narrow the interval of the size that reaches ``target`` (or, without a
    target, of the prediction at four times the largest size). Without a fit: the next
    doubling. Returns ``{"size", "reason"}`` (``size`` None when the pool is used up).
    """
    if not curve.points:
        return {"size": None, "reason": "no finished run yet"}
    largest = curve.points[-1].size
    cap = curve.pool
    if cap is not None and largest >= cap:
        return {
            "size": None,
            "reason": f"every one of the {cap} usable teacher answers is used: collect more",
        }
    candidates = sorted({round(largest * f) for f in CANDIDATE_FACTORS})
    if cap is not None:
        candidates = sorted({min(c, cap) for c in candidates})
    fit = curve.fit
    if fit is None:
        size = candidates[1] if len(candidates) > 1 else candidates[0]
        return {"size": size, "reason": "no fit holds yet: the next doubling adds the most information"}
    try:
        value = curve.resolve_target(target)
    except SpecError:
        value = None
    errors = [p.stderr for p in curve.points]
    typical = float(np.median(errors))
    widths = []
    for m in candidates:
        again = fitting.fit_family(
            fit.family,
            [*curve.sizes, m],
            [*curve.mean, float(fit.predict(m))],
            [*errors, typical],
            draws=100,
        )
        widths.append(_width(again, value, largest) if again else math.inf)
    best = int(np.argmin(widths))
    what = "the size that reaches the target" if value is not None else f"the prediction at n={4 * largest}"
    return {
        "size": candidates[best],
        "reason": f"a point there narrows the interval of {what} the most",
        "width_after": widths[best] if math.isfinite(widths[best]) else None,
    }


def _width(fit: fitting.Fit, target: float | None, largest: int) -> float:
    """How uncertain the answer is: log-width of the target size's interval, or band width."""
    if target is not None:
        lo, hi = fitting.interval(fitting.size_for_draws(fit, target))
        hi = min(hi, 1e9) if math.isfinite(lo) else 1e9
        return math.log(max(hi, 1.0) / max(lo, 1.0)) if math.isfinite(lo) else math.inf
    lo_b, hi_b = fit.band(4 * largest)
    return float(hi_b[0] - lo_b[0])
