"""Data-size ablations: launch the grid, then read it back as a marginal-utility curve.

One experiment = a teacher job (data + teacher answers for every prompt) followed by one
training run per (train size, seed). Sizes are nested subsets of one shuffled pool, so the
curve isolates the value of *more* data. All runs are scored on the same frozen test split.
The curve is fitted with a saturating power law ``y = c - a * n^(-b)`` (the usual shape of
learning curves), which gives the marginal value of the next examples and an extrapolation.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.specs import ExperimentSpec
from engine.store import Store


def check_workspace(store: Store, spec: ExperimentSpec) -> None:
    """Refuse, before any (paid) teacher call, names the workspace does not know.

    A misspelt ``data.dataset`` would fail the teacher job; a misspelt ``curation.judge``
    (with ``judge_missing: drop``) would drop every teacher answer after they were paid for.

    Raises:
        engine.specs.SpecError: the message names the field and what the workspace has.
    """
    from engine.data.datasets import find_dataset
    from engine.specs import SpecError

    if spec.data.source == "dataset" and spec.data.dataset:
        try:
            find_dataset(store, spec.data.dataset)
        except ValueError as err:
            raise SpecError(str(err)) from None
    if spec.ablation.versus_teacher and spec.teacher.kind == "local":
        raise SpecError(
            "ablation.versus_teacher: a local teacher cannot judge yet; judge runs from "
            "Judge calibration → Head to head with an endpoint instead"
        )
    judge = spec.curation.judge
    if judge and judge not in (names := store.judge_names()):
        known = ", ".join(names) or "none yet"
        raise SpecError(
            f"curation.judge: no judge named {judge!r} has verdicts in this workspace (judges: {known}); "
            "run it on the teacher answers first (Judge calibration), or fix the name"
        )


def launch_experiment(store: Store, spec: ExperimentSpec) -> str:
    """Queue an experiment: one teacher job, then one train job per (size, seed), each followed
    by a pairwise comparison with the teacher when ``ablation.versus_teacher``.

    Everything is written in one transaction, so a launch is either fully queued or not at all.
    Returns the experiment id.

    Raises:
        engine.specs.SpecError: the spec names a dataset or judge this workspace does not
            have (see :func:`check_workspace`); nothing is queued.
    """
    check_workspace(store, spec)
    spec_dict = spec.model_dump(mode="json")
    with store.tx() as conn:
        exp_id = store.add_experiment(conn, spec.name, spec_dict, spec.fingerprint())
        teacher = store.add_job(conn, "teacher", {"experiment": spec_dict}, experiment_id=exp_id)
        for size in spec.ablation.train_sizes:
            for seed in spec.ablation.seeds:
                run_id = store.add_run(conn, exp_id, size, seed)
                job_id = store.add_job(
                    conn,
                    "train",
                    {"experiment": spec_dict, "train_size": size, "seed": seed},
                    experiment_id=exp_id,
                    depends_on=[teacher],
                    run_id=run_id,
                )
                store.link_run_job(conn, run_id, job_id)
                if spec.ablation.versus_teacher:
                    from engine.judges.pairwise import JOB_KIND, versus_teacher_spec

                    store.add_job(
                        conn,
                        JOB_KIND,
                        versus_teacher_spec(spec, exp_id, run_id),
                        experiment_id=exp_id,
                        depends_on=[job_id],
                    )
    return exp_id


def teacher_ceiling(store: Store, spec: ExperimentSpec, dataset_id: str | None) -> dict[str, float] | None:
    """The teacher's own scores on the test split (against the references), if known."""
    if not dataset_id:
        return None
    from engine.scoring.metrics import aggregate, score

    answers = store.get_teacher_responses(dataset_id, spec.teacher_key())
    rows = []
    for ex in store.get_examples(dataset_id, "test"):
        ans = answers.get(ex["idx"])
        if ex["reference"] is None or ans is None:
            continue
        rows.append(score(spec.task, ans["output"] or "", ex["reference"]))
    return aggregate(rows) if rows else None


@dataclass
class Curve:
    """A marginal-utility curve: metric vs train size (mean and spread over seeds)."""

    metric: str
    sizes: list[int]
    mean: list[float]
    std: list[float]
    n_seeds: list[int]
    points: list[dict[str, Any]] = field(default_factory=list)
    ceiling: float | None = None
    fit: dict[str, float] | None = None

    def marginal_per_100(self) -> list[float | None]:
        """Gain in the metric per extra 100 examples between consecutive sizes."""
        out: list[float | None] = [None]
        for i in range(1, len(self.sizes)):
            out.append(100 * (self.mean[i] - self.mean[i - 1]) / (self.sizes[i] - self.sizes[i - 1]))
        return out

    def predict(self, n: float) -> float | None:
        """Fitted metric at size ``n`` (None when no fit)."""
        if not self.fit:
            return None
        return self.fit["c"] - self.fit["a"] * n ** (-self.fit["b"])

    def table(self) -> list[dict[str, Any]]:
        """Rows for display: size, mean, std, seeds, marginal gain per 100 examples."""
        marg = self.marginal_per_100()
        return [
            {"train_size": s, self.metric: m, "std": sd, "seeds": k, "gain_per_100": g}
            for s, m, sd, k, g in zip(self.sizes, self.mean, self.std, self.n_seeds, marg, strict=True)
        ]

    def summary_line(self) -> str:
        """``curve <metric>: <size>=<value> ...`` (machine-checked by ``make demo``)."""
        cells = " ".join(f"{s}={m:.4f}" for s, m in zip(self.sizes, self.mean, strict=True))
        return f"curve {self.metric}: {cells}"


def fit_power_law(
    sizes: list[int], values: list[float], ceiling: float | None = None
) -> dict[str, float] | None:
    """Fit ``y = c - a * n^(-b)`` (a, b > 0). Needs three sizes; None when it cannot fit.

    The asymptote ``c`` is capped at ``ceiling``; by default at 1.0 when every value lies in
    [0, 1] (accuracy-like metrics), so the extrapolation never promises more than perfect.
    """
    if len(sizes) < 3:
        return None
    from scipy.optimize import curve_fit

    x, y = np.asarray(sizes, float), np.asarray(values, float)
    if ceiling is None and y.min() >= 0.0 and y.max() <= 1.0:
        ceiling = 1.0
    c_max = np.inf if ceiling is None else max(float(ceiling), float(y.max()) + 1e-9)

    def f(n: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
        return c - a * n ** (-b)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            (a, b, c), _ = curve_fit(
                f,
                x,
                y,
                p0=(max(y.max() - y.min(), 1e-3) * x.min() ** 0.5, 0.5, min(y.max(), c_max)),
                bounds=([0, 0.01, -np.inf], [np.inf, 3.0, c_max]),
                maxfev=20000,
            )
    except (RuntimeError, ValueError):
        return None
    if not all(math.isfinite(v) for v in (a, b, c)):
        return None
    resid = y - f(x, a, b, c)
    return {"a": float(a), "b": float(b), "c": float(c), "rmse": float(np.sqrt(np.mean(resid**2)))}


def experiment_curve(store: Store, experiment_id: str, metric: str | None = None) -> Curve | None:
    """The curve of a (possibly still running) experiment from its finished runs."""
    exp = store.get_experiment(experiment_id)
    if exp is None:
        return None
    spec = ExperimentSpec.model_validate(exp["spec"])
    metric = metric or spec.curve_metric()
    by_size: dict[int, list[float]] = {}
    points = []
    for run in store.list_runs(experiment_id):
        metrics = run.get("metrics") or {}
        if run["status"] == "succeeded" and metric in metrics:
            by_size.setdefault(run["train_size"], []).append(float(metrics[metric]))
            points.append(
                {
                    "run_id": run["id"],
                    "train_size": run["train_size"],
                    "seed": run["seed"],
                    metric: float(metrics[metric]),
                }
            )
    sizes = sorted(by_size)
    mean = [float(np.mean(by_size[s])) for s in sizes]
    std = [float(np.std(by_size[s])) for s in sizes]
    ceiling = teacher_ceiling(store, spec, exp.get("dataset_id"))
    return Curve(
        metric=metric,
        sizes=sizes,
        mean=mean,
        std=std,
        n_seeds=[len(by_size[s]) for s in sizes],
        points=points,
        ceiling=(ceiling or {}).get(metric),
        fit=fit_power_law(sizes, mean),
    )


def experiment_status(store: Store, experiment_id: str) -> str:
    """Overall status: running while any job is active, else failed/cancelled/succeeded."""
    statuses = {j["status"] for j in store.list_jobs(experiment_id=experiment_id)}
    if statuses & {"queued", "running"}:
        return "running" if "running" in statuses else "queued"
    for s in ("failed", "cancelled"):
        if s in statuses:
            return s
    return "succeeded" if statuses else "empty"
