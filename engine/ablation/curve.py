"""An experiment read back as a marginal-utility curve: points with intervals, baselines, fit.

Each point is the mean over seeds of the runs of one train size, with a 95% interval from a
two-level bootstrap: seeds are redrawn (when there are several) and so are the test examples
(the same draw for every seed, since all runs answer the same test split), so the interval
carries both the seed-to-seed noise and the finite test set. One seed gets the bootstrap
over examples alone — never a zero-width "std 0.0000".

Baselines are drawn beside the curve: the teacher's own score against the gold answers (a
reference line, not a ceiling: a student can beat it), the untrained student (size 0, scored
like every run) and, where it means something, the majority answer.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.ablation import fit as fitting
from engine.specs import ExperimentSpec, SpecError, variant_key
from engine.store import Store
from engine.store.artifacts import ArtifactsError, artifacts, run_folder

BOOTSTRAP = 1000
"""Draws of the per-point bootstrap."""
NON_METRICS = {"n", "n_train", "n_val", "eval_time_s", "train_loss", "train_time_s", "tokens_per_s"}
NON_METRICS |= {"train_steps", "train_epochs", "best_step"}


@dataclass
class Point:
    """One train size: the mean over its seeds and a 95% interval."""

    size: int
    mean: float
    ci_low: float
    ci_high: float
    n_seeds: int
    values: list[float]

    @property
    def stderr(self) -> float:
        """The interval as a standard error (for weighting a fit)."""
        return max((self.ci_high - self.ci_low) / (2 * fitting.Z95), 1e-4)


@dataclass
class Curve:
    """A marginal-utility curve: metric against train size, with what it supports."""

    metric: str
    points: list[Point]
    runs: list[dict[str, Any]] = field(default_factory=list)
    """Every finished run: ``run_id``, ``train_size``, ``seed``, the metric, steps and epochs."""
    metrics: list[str] = field(default_factory=list)
    """Every metric the runs have (for a metric picker)."""
    baselines: dict[str, float] = field(default_factory=dict)
    """``teacher``, ``zero_shot`` and ``majority`` where known."""
    curve_fit: fitting.CurveFit | None = None
    teacher_cost_per_example: float | None = None
    """Measured teacher dollars per answered prompt (from the teacher job)."""
    train_seconds_per_example: float | None = None
    """Measured training seconds per training example (at the largest size)."""
    pool: int | None = None
    """Usable teacher answers the sizes are drawn from, when known."""

    # ----------------------------------------------------------- plain series
    @property
    def sizes(self) -> list[int]:
        return [p.size for p in self.points]

    @property
    def mean(self) -> list[float]:
        return [p.mean for p in self.points]

    @property
    def n_seeds(self) -> list[int]:
        return [p.n_seeds for p in self.points]

    @property
    def teacher(self) -> float | None:
        """The teacher's own score on the test split (a reference line)."""
        return self.baselines.get("teacher")

    @property
    def fit(self) -> fitting.Fit | None:
        return self.curve_fit.fit if self.curve_fit else None

    def predict(self, n: float) -> float | None:
        """Fitted metric at size ``n`` (None when no fit holds)."""
        return None if self.fit is None else float(self.fit.predict(n))

    def marginal_per_100(self) -> list[float | None]:
        """Measured gain per extra 100 examples between consecutive sizes."""
        out: list[float | None] = [None]
        for a, b in zip(self.points, self.points[1:], strict=False):
            out.append(100 * (b.mean - a.mean) / (b.size - a.size))
        return out

    def table(self) -> list[dict[str, Any]]:
        """Rows for display: size, mean, interval, seeds, measured gain per 100 examples."""
        return [
            {
                "train_size": p.size,
                self.metric: p.mean,
                "ci_low": p.ci_low,
                "ci_high": p.ci_high,
                "seeds": p.n_seeds,
                "gain_per_100": g,
            }
            for p, g in zip(self.points, self.marginal_per_100(), strict=True)
        ]

    def summary_line(self, label: str | None = None) -> str:
        """``curve <metric>: <size>=<value> ...`` (machine-checked by ``make demo``); with a
        ``label`` (one value of ``ablation.vary``), ``curve <metric> [<label>]: ...``."""
        cells = " ".join(f"{p.size}={p.mean:.4f}" for p in self.points)
        name = f"{self.metric} [{label}]" if label is not None else self.metric
        return f"curve {name}: {cells}"

    # ------------------------------------------------------------ what it buys
    def resolve_target(self, target: str | float | None) -> float | None:
        """A target as a metric value: ``0.9``, or ``"95%"`` of the teacher (default: 100%)."""
        if target is None:
            return self.teacher
        if isinstance(target, str) and target.strip().endswith("%"):
            if self.teacher is None:
                raise SpecError(f"target {target}: a share of the teacher needs the teacher's score")
            return self.teacher * float(target.strip()[:-1]) / 100
        return float(target)

    def marginal(self) -> dict[str, Any] | None:
        """From the fit, at the largest size: gain per +10% and per +1,000 examples, with intervals."""
        if self.fit is None or not self.points:
            return None
        n = float(self.points[-1].size)
        out: dict[str, Any] = {"at_size": int(n)}
        here = self.fit.draw_predictions(n)
        for key, more in (("per_10_percent", n * 1.1), ("per_1000_examples", n + 1000)):
            gain = float(self.fit.predict(more) - self.fit.predict(n))
            draws = self.fit.draw_predictions(more) - here
            lo, hi = fitting.interval(draws)
            out[key] = {"gain": gain, "ci_low": lo, "ci_high": hi}
        return out

    def to_target(self, target: str | float | None = None) -> dict[str, Any] | None:
        """The size that reaches ``target`` (interval), with its teacher dollars and training time."""
        value = self.resolve_target(target)
        if value is None or self.fit is None:
            return None
        size = fitting.size_for(self.fit, value)
        lo, hi = fitting.interval(fitting.size_for_draws(self.fit, value))
        reached = [p.size for p in self.points if p.mean >= value]
        out: dict[str, Any] = {
            "target": value,
            "target_spec": target if target is not None else "100%",
            "size": _finite(size),
            "ci_low": _finite(lo),
            "ci_high": _finite(hi),
            "already_reached_at": reached[0] if reached else None,
        }
        if math.isfinite(size):
            if self.teacher_cost_per_example is not None:
                out["teacher_usd"] = round(size * self.teacher_cost_per_example, 4)
                paid = self.pool or 0
                out["teacher_usd_more"] = round(max(0.0, size - paid) * self.teacher_cost_per_example, 4)
            if self.train_seconds_per_example is not None:
                out["train_seconds"] = round(size * self.train_seconds_per_example, 1)
        return out

    def next_size(self, target: str | float | None = None) -> dict[str, Any]:
        """The size to run next: where a point would most narrow the target's prediction, or
        the next doubling when no fit holds."""
        from engine.ablation.grow import suggest_next_size

        return suggest_next_size(self, target)

    def to_json(self, target: str | float | None = None) -> dict[str, Any]:
        """What ``python -m engine curve EXP --json`` prints."""
        return {
            "metric": self.metric,
            "metrics": self.metrics,
            "points": [
                {
                    "size": p.size,
                    "mean": p.mean,
                    "ci_low": p.ci_low,
                    "ci_high": p.ci_high,
                    "n_seeds": p.n_seeds,
                }
                for p in self.points
            ],
            "fit": self.curve_fit.to_json() if self.curve_fit else None,
            "no_fit_reason": self.curve_fit.reason if self.curve_fit else None,
            "baselines": self.baselines,
            "marginal": self.marginal(),
            "to_target": self.to_target(target),
            "next_size": self.next_size(target),
            "teacher_cost_per_example": self.teacher_cost_per_example,
            "train_seconds_per_example": self.train_seconds_per_example,
            "pool": self.pool,
        }


def _finite(v: float) -> float | None:
    return round(v, 1) if math.isfinite(v) else None


def point_interval(per_seed: list[dict[int, float]], seed: int = 0) -> tuple[float, float, float]:
    """Mean over seeds and a 95% two-level bootstrap interval of per-example scores.

    Args:
        per_seed: For each seed's run, ``{test example idx: score}``.

    Returns:
        ``(mean, low, high)``.
    """
    common = sorted(set.intersection(*(set(s) for s in per_seed))) if per_seed else []
    if not common:
        return math.nan, math.nan, math.nan
    scores = np.array([[run[i] for i in common] for run in per_seed], float)  # (seeds, examples)
    mean = float(scores.mean())
    rng = np.random.default_rng(seed)
    k, m = scores.shape
    examples = rng.integers(0, m, (BOOTSTRAP, m))
    by_seed = scores[:, examples].mean(-1)  # (seeds, draws)
    if k > 1:
        pick = rng.integers(0, k, (BOOTSTRAP, k))
        draws = by_seed[pick, np.arange(BOOTSTRAP)[:, None]].mean(-1)
    else:
        draws = by_seed[0]
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return mean, float(lo), float(hi)


def _seed_interval(values: list[float]) -> tuple[float, float, float]:
    """Fallback for runs without per-example outputs: a t interval over seeds (or none)."""
    mean = float(np.mean(values))
    if len(values) < 2:
        return mean, math.nan, math.nan
    from scipy.stats import t

    half = float(t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / math.sqrt(len(values)))
    return mean, mean - half, mean + half


def _run_train_record(store: Store, run: dict[str, Any]) -> dict[str, Any] | None:
    """The ``train`` section of a run's ``metadata.json`` (fetched from the artifacts when the
    run trained on another machine), or ``None`` while there is none."""
    try:
        meta = json.loads(artifacts(store).pull_file(run_folder(store, run) / "metadata.json").read_text())
        train = meta["train"]
    except (OSError, ValueError, TypeError, KeyError, ArtifactsError):
        return None
    return train if isinstance(train, dict) else None


def _stop_reason(store: Store, run: dict[str, Any]) -> str | None:
    """Why a run stopped training (``early_stop``, ``max_steps``, ...), from its metadata."""
    if run["train_size"] == 0:
        return "zero_shot"
    return (_run_train_record(store, run) or {}).get("stop_reason")


def _run_metrics(runs: list[dict[str, Any]]) -> list[str]:
    names: set[str] = set()
    for run in runs:
        names |= {k for k in (run.get("metrics") or {}) if k not in NON_METRICS}
    return sorted(names)


class _AllVariants:
    def __repr__(self) -> str:
        return "ALL_VARIANTS"


ALL_VARIANTS: Any = _AllVariants()
"""``experiment_curve``'s default ``variant``: every run, whatever value of ``ablation.vary``."""


def experiment_curve(
    store: Store,
    experiment_id: str,
    metric: str | None = None,
    with_fit: bool = True,
    variant: Any = ALL_VARIANTS,
) -> Curve | None:
    """The curve of a (possibly still running) experiment from its finished runs.

    Superseded attempts of a run (a failed job followed by a successful resume) do not
    count: a run counts once it succeeded. ``metric`` picks any metric the runs have.
    ``variant`` keeps only the runs of one value of the experiment's ``ablation.vary`` (e.g.
    ``"kd"`` for ``{"student.recipe": [...]}``); its baselines and pool are those of the spec
    resolved for that value. By default every run counts (one curve over all values).
    """
    exp = store.get_experiment(experiment_id)
    if exp is None:
        return None
    spec = ExperimentSpec.model_validate(exp["spec"])
    all_runs = store.list_runs(experiment_id)
    if variant is not ALL_VARIANTS:
        key = variant_key(variant)
        all_runs = [r for r in all_runs if r.get("variant_value") == key]
        if spec.vary_path() is not None:
            spec = spec.resolve_variant(variant)
    done = [r for r in all_runs if r["status"] == "succeeded" and r.get("metrics")]
    metrics = _run_metrics(done)
    metric = metric or spec.curve_metric()
    scored = [r for r in done if metric in r["metrics"]]
    trained = [r for r in scored if r["train_size"] > 0]
    outputs = store.output_scores(r["id"] for r in scored)
    points = []
    for size in sorted({r["train_size"] for r in trained}):
        at = sorted((r for r in trained if r["train_size"] == size), key=lambda r: r["seed"])
        values = [float(r["metrics"][metric]) for r in at]
        per_seed = [{i: float(s[metric]) for i, s in outputs[r["id"]].items() if metric in s} for r in at]
        if all(per_seed):
            mean, lo, hi = point_interval(per_seed, seed=size)
        else:
            mean, lo, hi = _seed_interval(values)
        points.append(Point(size, mean, lo, hi, len(at), values))
    baselines = baseline_scores(store, spec, exp.get("dataset_id"), metric)
    zero = [float(r["metrics"][metric]) for r in scored if r["train_size"] == 0]
    if zero:
        baselines["zero_shot"] = float(np.mean(zero))
    curve = Curve(
        metric=metric,
        points=points,
        runs=[
            {
                "run_id": r["id"],
                "train_size": r["train_size"],
                "seed": r["seed"],
                metric: float(r["metrics"][metric]),
                "steps": r["metrics"].get("train_steps"),
                "epochs": r["metrics"].get("train_epochs"),
                "stop": _stop_reason(store, r),
            }
            for r in scored
        ],
        metrics=metrics,
        baselines=baselines,
        teacher_cost_per_example=teacher_cost_per_example(store, experiment_id),
        train_seconds_per_example=_train_seconds_per_example(trained),
        pool=usable_pool(store, spec, exp.get("dataset_id")),
    )
    if with_fit and points:
        ok = [p for p in points if math.isfinite(p.ci_low)]
        errors = [p.stderr for p in points] if len(ok) == len(points) else None
        curve.curve_fit = fitting.choose_fit(curve.sizes, curve.mean, errors)
    return curve


def variant_curves(
    store: Store, experiment_id: str, metric: str | None = None, with_fit: bool = True
) -> list[tuple[Any, Curve]]:
    """One curve per value of the experiment's ``ablation.vary``, in the spec's order:
    ``[(value, curve)]`` (one ``(None, curve)`` when nothing varies; empty when there is no
    such experiment). Every curve uses the same metric (the spec's curve metric by default)."""
    exp = store.get_experiment(experiment_id)
    if exp is None:
        return []
    spec = ExperimentSpec.model_validate(exp["spec"])
    metric = metric or spec.curve_metric()
    path = spec.vary_path()
    values = spec.ablation.vary[path] if path is not None else [ALL_VARIANTS]
    out = []
    for value in values:
        curve = experiment_curve(store, experiment_id, metric, with_fit, variant=value)
        if curve is not None:
            out.append((None if value is ALL_VARIANTS else value, curve))
    return out


@dataclass(frozen=True)
class StageLoss:
    """How one training stage's loss moved, averaged over the runs of one vary value.

    Attributes:
        stage: ``sft`` (SFT on teacher or gold answers) or ``kd`` (token-level distillation).
        first: Mean first logged loss.
        final: Mean last logged loss.
        runs: How many finished runs the means cover.
    """

    stage: str
    first: float
    final: float
    runs: int

    @property
    def fell(self) -> bool:
        return self.final < self.first


def variant_losses(store: Store, experiment_id: str) -> list[tuple[Any, list[StageLoss]]]:
    """Per value of ``ablation.vary`` (one ``None`` entry when nothing varies), the mean first
    and last training loss of each stage, read from the finished runs' ``metadata.json``.

    A run's stages are its first training (SFT, or KD when the recipe is ``kd``) and, for
    ``sft+kd``, the KD stage after it. Runs without metadata (unfinished) are left out.
    """
    exp = store.get_experiment(experiment_id)
    if exp is None:
        return []
    spec = ExperimentSpec.model_validate(exp["spec"])
    path = spec.vary_path()
    values = spec.ablation.vary[path] if path is not None else [ALL_VARIANTS]
    runs = store.list_runs(experiment_id)
    out: list[tuple[Any, list[StageLoss]]] = []
    for value in values:
        key = None if value is ALL_VARIANTS else variant_key(value)
        by_stage: dict[str, list[tuple[float, float]]] = {}
        for run in runs:
            if key is not None and run.get("variant_value") != key:
                continue
            train = _run_train_record(store, run)
            if train is None:
                continue
            first_stage = "kd" if train.get("recipe") == "kd" else "sft"
            stages = [(first_stage, train)] + (
                [("kd", train["kd"])] if first_stage == "sft" and train.get("kd") else []
            )
            for stage, record in stages:
                losses = (record.get("first_loss"), record.get("final_loss"))
                if all(isinstance(x, int | float) and math.isfinite(x) for x in losses):
                    by_stage.setdefault(stage, []).append(losses)  # type: ignore[arg-type]
        out.append(
            (
                None if value is ALL_VARIANTS else value,
                [
                    StageLoss(
                        stage,
                        float(np.mean([f for f, _ in pairs])),
                        float(np.mean([x for _, x in pairs])),
                        len(pairs),
                    )
                    for stage, pairs in by_stage.items()
                ],
            )
        )
    return out


def baseline_scores(
    store: Store, spec: ExperimentSpec, dataset_id: str | None, metric: str
) -> dict[str, float]:
    """The teacher's score and the majority answer's score on the test split, where known.

    Memoised per dataset (content-hashed, so immutable), teacher, task, metric and number of
    stored answers: a finished teacher job's baselines are computed once per process.
    """
    if not dataset_id:
        return {}
    key = (
        str(store.home),
        dataset_id,
        spec.teacher_key(),
        spec.task.model_dump_json(),
        metric,
        store.count_usable_answers(dataset_id, spec.teacher_key(), False),
    )
    if key not in _BASELINES:
        if len(_BASELINES) > 256:
            _BASELINES.clear()
        _BASELINES[key] = _baseline_scores(store, spec, dataset_id, metric)
    return dict(_BASELINES[key])


_BASELINES: dict[tuple[Any, ...], dict[str, float]] = {}


def _baseline_scores(store: Store, spec: ExperimentSpec, dataset_id: str, metric: str) -> dict[str, float]:
    from engine.scoring.metrics import aggregate, score

    test = [ex for ex in store.get_examples(dataset_id, "test") if ex["reference"] is not None]
    out: dict[str, float] = {}
    answers = store.get_teacher_responses(dataset_id, spec.teacher_key())
    rows = [
        score(spec.task, answers[ex["idx"]]["output"] or "", ex["reference"])
        for ex in test
        if ex["idx"] in answers
    ]
    if rows and metric in (teacher := aggregate(rows)):
        out["teacher"] = teacher[metric]
    majority = majority_answer(spec, [ex["reference"] for ex in store.get_examples(dataset_id, "train")])
    if majority is not None and test:
        rows = [score(spec.task, majority, ex["reference"]) for ex in test]
        if metric in (agg := aggregate(rows)):
            out["majority"] = agg[metric]
    return out


def majority_answer(spec: ExperimentSpec, references: list[str | None]) -> str | None:
    """The answer a model that ignored its input would give: the most common label, or for
    JSON tasks each field's most common value. None for free text."""
    refs = [r for r in references if r]
    if not refs or spec.task.output_kind == "text":
        return None
    if spec.task.output_kind == "label":
        return Counter(r.strip() for r in refs).most_common(1)[0][0]
    values: dict[str, Counter[str]] = {}
    for ref in refs:
        try:
            obj = json.loads(ref)
        except ValueError:
            continue
        if isinstance(obj, dict):
            for key, value in obj.items():
                values.setdefault(key, Counter())[json.dumps(value, sort_keys=True)] += 1
    if not values:
        return None
    return json.dumps({k: json.loads(c.most_common(1)[0][0]) for k, c in values.items()})


def teacher_cost_per_example(store: Store, experiment_id: str) -> float | None:
    """Dollars per answered prompt, from the teacher job's summary (cache hits count as paid)."""
    path = store.experiments_dir / experiment_id / "teacher_summary.json"
    try:
        summary = json.loads(artifacts(store).pull_file(path).read_text())
    except (OSError, ValueError, ArtifactsError):
        return None
    answered = summary.get("answered") or 0
    return float(summary.get("cost_usd") or 0.0) / answered if answered else None


def _train_seconds_per_example(runs: list[dict[str, Any]]) -> float | None:
    if not runs:
        return None
    largest = max(r["train_size"] for r in runs)
    times = [r["metrics"].get("train_time_s") for r in runs if r["train_size"] == largest]
    times = [float(t) for t in times if t is not None]
    return float(np.mean(times)) / largest if times else None


def usable_pool(store: Store, spec: ExperimentSpec, dataset_id: str | None) -> int | None:
    """Train examples with a usable teacher answer (curation not applied): what sizes draw from.
    For the ``gold`` recipe, train examples with a reference answer."""
    if not dataset_id:
        return None
    if spec.student.effective_recipe == "gold":
        return sum(1 for ex in store.get_examples(dataset_id, "train") if (ex["reference"] or "").strip())
    return store.count_usable_answers(dataset_id, spec.teacher_key(), spec.data.require_valid_output)


def experiment_metrics(store: Store, experiment_id: str) -> list[str]:
    """Every metric the finished runs of an experiment have (cheap: no curve is computed)."""
    return _run_metrics([r for r in store.list_runs(experiment_id) if r["status"] == "succeeded"])
