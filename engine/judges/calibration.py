"""How far to trust a judge: agreement with subject-matter experts (SMEs) on the same answers.

The SME labels each answer ``accept`` or ``reject`` (optionally with an error category such
as "wrong field"); the judge gives its verdicts on the same answers. ``accept`` is the
positive class, because accepting a bad answer is the costly mistake when a judge curates
training data. A judge reply that could not be used (``unparsable`` or ``error``) counts as
*not accept*, never as accept, and is also counted separately so a judge that mostly fails to
answer cannot hide behind a good kappa.

Reported: the confusion matrix (with the unparsable column kept visible), agreement, Cohen's
kappa, precision/recall/F1 of accept, each with a percentile bootstrap confidence interval
from a seeded ``numpy`` generator, and a per-category breakdown. :func:`compare_judges`
compares two judges on one SME set with a *paired* bootstrap (the same resampled answers for
both), which is what makes a difference between them meaningful.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

METRICS = ("agreement", "kappa", "precision", "recall", "f1")
JUDGE_LABELS = ("accept", "reject", "unparsable", "error")
NO_CATEGORY = "(none)"

Interval = tuple[float, float] | None


def _judge_label(value: Any) -> str:
    label = getattr(value, "verdict", value)  # a Verdict or a plain string
    if label not in JUDGE_LABELS:
        raise ValueError(f"judge verdict {label!r} is not one of {', '.join(JUDGE_LABELS)}")
    return str(label)


def _sme_label(value: Any) -> str:
    if isinstance(value, bool | np.bool_):
        return "accept" if value else "reject"
    if value not in ("accept", "reject"):
        raise ValueError(f"SME label {value!r} is not accept or reject")
    return str(value)


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float | None:
    """Cohen's kappa of two raters over the same items, any number of categories.

    ``kappa = (p_o - p_e) / (1 - p_e)`` with ``p_o`` the observed agreement and ``p_e`` the
    agreement expected by chance from each rater's label frequencies.

    Returns:
        Kappa in [-1, 1]; None when it is undefined (both raters always give one same label).
    """
    if len(a) != len(b) or not a:
        raise ValueError("kappa needs two equally long, non-empty label sequences")
    n = len(a)
    p_o = sum(x == y for x, y in zip(a, b, strict=True)) / n
    count_a, count_b = Counter(a), Counter(b)
    p_e = sum(count_a[k] * count_b[k] for k in count_a) / (n * n)
    return None if p_e == 1 else (p_o - p_e) / (1 - p_e)


def _rates(tp: Any, fp: Any, fn: Any, tn: Any) -> dict[str, Any]:
    """The metrics from confusion counts (scalars or arrays); NaN where undefined."""
    tp, fp, fn, tn = (np.asarray(x, dtype=float) for x in (tp, fp, fn, tn))
    n = tp + fp + fn + tn
    with np.errstate(divide="ignore", invalid="ignore"):
        p_sme, p_judge = (tp + fn) / n, (tp + fp) / n
        p_e = p_sme * p_judge + (1 - p_sme) * (1 - p_judge)
        agreement = (tp + tn) / n
        return {
            "agreement": agreement,
            "kappa": np.where(np.isclose(p_e, 1.0), np.nan, (agreement - p_e) / (1 - p_e)),
            "precision": tp / (tp + fp),
            "recall": tp / (tp + fn),
            "f1": 2 * tp / (2 * tp + fp + fn),
        }


def _finite(x: Any) -> float | None:
    value = float(x)
    return value if np.isfinite(value) else None


def _bootstrap(
    pairs: Sequence[tuple[np.ndarray, np.ndarray]], n_boot: int, seed: int
) -> list[dict[str, np.ndarray]]:
    """Per (sme, judge) boolean pair, each metric on ``n_boot`` shared resamples of the items."""
    n = len(pairs[0][0])
    rng = np.random.default_rng(seed)
    out: list[dict[str, list[np.ndarray]]] = [{m: [] for m in METRICS} for _ in pairs]
    chunk = max(1, min(256, 4_000_000 // n))  # bounds the index matrix for big SME sets
    for start in range(0, n_boot, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_boot - start), n))
        for k, (sme, judge) in enumerate(pairs):
            s, j = sme[idx], judge[idx]
            rates = _rates((s & j).sum(1), (~s & j).sum(1), (s & ~j).sum(1), (~s & ~j).sum(1))
            for m in METRICS:
                out[k][m].append(rates[m])
    return [{m: np.concatenate(v) for m, v in d.items()} for d in out]


def _interval(samples: np.ndarray, level: float) -> Interval:
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return None
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class CategoryStats:
    """Judge behaviour on the answers of one SME error category.

    Attributes:
        n: answers in the category.
        agreement: fraction where the judge's accept/not-accept matches the SME.
        judge_accept_rate: fraction the judge accepted.
        missed: SME-rejected answers the judge accepted (the costly mistake).
        false_rejects: SME-accepted answers the judge did not accept.
        unparsable: unusable judge replies (unparsable or error).
    """

    n: int
    agreement: float
    judge_accept_rate: float
    missed: int
    false_rejects: int
    unparsable: int


@dataclass(frozen=True)
class Calibration:
    """A judge against SME labels; ``accept`` is the positive class.

    Attributes:
        n: labelled answers.
        matrix: ``matrix[sme_label][judge_label]`` counts, judge labels as in JUDGE_LABELS.
        tp, fp, fn, tn: SME accept & judge accept, SME reject & judge accept, SME accept & judge
            not accept, SME reject & judge not accept (unparsable and error are "not accept").
        unparsable: judge replies that were unparsable; errors: requests that failed.
        agreement, kappa, precision, recall, f1: point estimates (None where undefined).
        ci: bootstrap interval per metric (None where undefined in every resample).
        per_category: by SME error category (answers without one are under ``(none)``).
    """

    n: int
    matrix: dict[str, dict[str, int]]
    tp: int
    fp: int
    fn: int
    tn: int
    unparsable: int
    errors: int
    agreement: float
    kappa: float | None
    precision: float | None
    recall: float | None
    f1: float | None
    ci: dict[str, Interval] = field(default_factory=dict)
    per_category: dict[str, CategoryStats] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (intervals as two-element lists)."""
        return asdict(self)


def _prepare(sme: Sequence[Any], judge: Sequence[Any], level: float = 0.95) -> tuple[list[str], list[str]]:
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    if len(sme) != len(judge):
        raise ValueError(f"{len(sme)} SME labels but {len(judge)} judge verdicts")
    if not sme:
        raise ValueError("calibration needs at least one labelled answer")
    return [_sme_label(x) for x in sme], [_judge_label(x) for x in judge]


def _categories(categories: Sequence[str | None] | None, n: int) -> list[str]:
    if categories is None:
        return [NO_CATEGORY] * n
    if len(categories) != n:
        raise ValueError(f"{len(categories)} categories for {n} answers")
    return [c or NO_CATEGORY for c in categories]


def _calibration(s_lab: list[str], j_lab: list[str], cats: list[str], ci: dict[str, Interval]) -> Calibration:
    s = np.array([x == "accept" for x in s_lab])
    j = np.array([x == "accept" for x in j_lab])
    tp, fp, fn, tn = (int(x) for x in ((s & j).sum(), (~s & j).sum(), (s & ~j).sum(), (~s & ~j).sum()))
    rates = _rates(tp, fp, fn, tn)
    matrix = {a: {b: 0 for b in JUDGE_LABELS} for a in ("accept", "reject")}
    for a, b in zip(s_lab, j_lab, strict=True):
        matrix[a][b] += 1
    unusable = np.array([x in ("unparsable", "error") for x in j_lab])
    per_category = {}
    for cat in sorted(set(cats)):
        m = np.array([c == cat for c in cats])
        per_category[cat] = CategoryStats(
            n=int(m.sum()),
            agreement=float((s[m] == j[m]).mean()),
            judge_accept_rate=float(j[m].mean()),
            missed=int((~s[m] & j[m]).sum()),
            false_rejects=int((s[m] & ~j[m]).sum()),
            unparsable=int(unusable[m].sum()),
        )
    return Calibration(
        n=len(s_lab),
        matrix=matrix,
        tp=tp,
        fp=fp,
        fn=fn,
        tn=tn,
        unparsable=j_lab.count("unparsable"),
        errors=j_lab.count("error"),
        agreement=float(rates["agreement"]),
        kappa=_finite(rates["kappa"]),
        precision=_finite(rates["precision"]),
        recall=_finite(rates["recall"]),
        f1=_finite(rates["f1"]),
        ci=ci,
        per_category=per_category,
    )


def calibrate(
    sme: Sequence[Any],
    judge: Sequence[Any],
    categories: Sequence[str | None] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Calibration:
    """Compare a judge's verdicts with SME labels on the same answers.

    Args:
        sme: ``accept``/``reject`` (or True/False) per answer.
        judge: per answer, a verdict string (``accept``, ``reject``, ``unparsable``, ``error``)
            or a :class:`engine.judges.judge.Verdict`.
        categories: optional SME error category per answer (None for none).
        n_boot: bootstrap resamples for the intervals (0: no intervals).
        seed: seed of the bootstrap's ``numpy`` generator (same seed, same intervals).
        level: confidence level of the percentile intervals.
    """
    s_lab, j_lab = _prepare(sme, judge, level)
    cats = _categories(categories, len(s_lab))
    ci: dict[str, Interval] = {}
    if n_boot > 0:
        s = np.array([x == "accept" for x in s_lab])
        j = np.array([x == "accept" for x in j_lab])
        (samples,) = _bootstrap([(s, j)], n_boot, seed)
        ci = {m: _interval(samples[m], level) for m in METRICS}
    return _calibration(s_lab, j_lab, cats, ci)


@dataclass(frozen=True)
class JudgeComparison:
    """Two judges on one SME set.

    Attributes:
        a, b: each judge's calibration.
        difference: per metric, ``b - a`` (None where either is undefined).
        difference_ci: paired bootstrap interval of ``b - a``; excluding 0 means a real gap.
        judges_agreement: fraction of answers on which the judges agree (accept vs not).
        judges_kappa: Cohen's kappa between the two judges.
    """

    a: Calibration
    b: Calibration
    difference: dict[str, float | None]
    difference_ci: dict[str, Interval]
    judges_agreement: float
    judges_kappa: float | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


def compare_judges(
    sme: Sequence[Any],
    judge_a: Sequence[Any],
    judge_b: Sequence[Any],
    categories: Sequence[str | None] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> JudgeComparison:
    """Calibrate two judges on the same SME labels and measure the difference between them.

    Args: as :func:`calibrate`, with one verdict sequence per judge.
    """
    s_lab, a_lab = _prepare(sme, judge_a, level)
    _, b_lab = _prepare(sme, judge_b)
    s = np.array([x == "accept" for x in s_lab])
    ja, jb = (np.array([x == "accept" for x in lab]) for lab in (a_lab, b_lab))
    cats = _categories(categories, len(s_lab))
    ci_a: dict[str, Interval] = {}
    ci_b: dict[str, Interval] = {}
    diff_ci: dict[str, Interval] = {}
    if n_boot > 0:
        boot_a, boot_b = _bootstrap([(s, ja), (s, jb)], n_boot, seed)
        ci_a = {m: _interval(boot_a[m], level) for m in METRICS}
        ci_b = {m: _interval(boot_b[m], level) for m in METRICS}
        diff_ci = {m: _interval(boot_b[m] - boot_a[m], level) for m in METRICS}
    cal_a = _calibration(s_lab, a_lab, cats, ci_a)
    cal_b = _calibration(s_lab, b_lab, cats, ci_b)
    difference: dict[str, float | None] = {}
    for m in METRICS:
        va, vb = getattr(cal_a, m), getattr(cal_b, m)
        difference[m] = None if va is None or vb is None else vb - va
    return JudgeComparison(
        a=cal_a,
        b=cal_b,
        difference=difference,
        difference_ci=diff_ci,
        judges_agreement=float((ja == jb).mean()),
        judges_kappa=cohen_kappa(list(ja), list(jb)),
    )
