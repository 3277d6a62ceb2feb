"""What a trained small judge is worth: held-out agreement and cost per 1,000 verdicts.

Agreement is measured three ways on the held-out answers, each where the labels exist:
with the training target (SME label, else the judge's), with the big judge's verdicts, and
with the SME labels (a full :func:`~engine.judges.calibration.calibrate` report, plus a
paired comparison with the big judge where the big judge judged the same answers). The
majority-class baseline is the accuracy of always answering the training set's most common
label: a small judge that does not beat it has learnt nothing.

Cost is measured, not assumed: CPU seconds of the process (all threads) while the small judge
judged the held-out answers, priced at a configurable $/CPU-hour. The big judge's cost is
the configured price per 1,000 verdicts or, failing that, the mean cost of its non-cached
verdicts where the items carry one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from engine.judges.calibration import calibrate, cohen_kappa, compare_judges
from engine.judges.small.data import LabelledItem


def _agreement(truth: Sequence[str], predicted: Sequence[str]) -> dict[str, Any] | None:
    if not truth:
        return None
    agree = sum(a == b for a, b in zip(truth, predicted, strict=True))
    return {"n": len(truth), "agreement": agree / len(truth), "kappa": cohen_kappa(truth, predicted)}


def agreement_report(
    train: Sequence[LabelledItem],
    holdout: Sequence[LabelledItem],
    predicted: Sequence[str],
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Accuracy, baseline and agreement of held-out predictions.

    Args:
        train: the training answers (they set the majority label).
        holdout: the held-out answers.
        predicted: ``accept``/``reject`` per held-out answer.
        n_boot: bootstrap resamples for the SME calibration intervals.
        seed: bootstrap seed.

    Returns:
        ``accuracy``, ``kappa``, ``majority_label``, ``majority_baseline_accuracy``,
        ``vs_big_judge`` and ``vs_sme`` (None where no held-out answer has that label) and
        ``big_vs_small_on_sme`` (a paired comparison; None unless SME-labelled held-out
        answers also have a big-judge verdict).
    """
    targets = [it.label for it in holdout]
    majority = Counter(it.label for it in train).most_common(1)[0][0]
    overall = _agreement(targets, predicted)
    assert overall is not None
    by_judge = [(it.judge, p) for it, p in zip(holdout, predicted, strict=True) if it.judge]
    by_sme = [(it, p) for it, p in zip(holdout, predicted, strict=True) if it.sme]
    vs_sme = None
    if by_sme:
        sme = [it.sme for it, _ in by_sme]
        vs_sme = calibrate(sme, [p for _, p in by_sme], n_boot=n_boot, seed=seed).to_dict()
    both = [(it, p) for it, p in by_sme if it.judge]
    paired = None
    if both:
        paired = compare_judges(
            [it.sme for it, _ in both],
            [it.judge for it, _ in both],
            [p for _, p in both],
            n_boot=n_boot,
            seed=seed,
        ).to_dict()
    return {
        "accuracy": overall["agreement"],
        "kappa": overall["kappa"],
        "majority_label": majority,
        "majority_baseline_accuracy": sum(t == majority for t in targets) / len(targets),
        "vs_big_judge": _agreement([j for j, _ in by_judge], [p for _, p in by_judge]),
        "vs_sme": vs_sme,
        "big_vs_small_on_sme": paired,
    }


def big_judge_cost(items: Sequence[LabelledItem], configured: float | None) -> tuple[float | None, str]:
    """The big judge's USD per 1,000 verdicts and where the number came from.

    Returns:
        ``(usd_per_1000, source)``: source is ``configured``, ``measured`` (mean cost of the
        items' non-cached verdicts; cached ones cost 0 and would flatter the big judge) or
        ``unknown``.
    """
    if configured is not None:
        return configured, "configured"
    paid = [it.judge_cost_usd for it in items if it.judge_cost_usd]
    if paid:
        return 1000 * sum(paid) / len(paid), "measured"
    return None, "unknown"


def cost_report(
    cpu_seconds: float,
    wall_seconds: float,
    n: int,
    usd_per_cpu_hour: float,
    big_usd_per_1000: float | None,
    big_source: str,
) -> dict[str, Any]:
    """Small judge vs big judge, per 1,000 verdicts.

    Args:
        cpu_seconds: process CPU time (all threads) spent judging ``n`` answers.
        wall_seconds: wall-clock time for the same.
        n: answers judged.
        usd_per_cpu_hour: price of one CPU core for an hour.
        big_usd_per_1000: the big judge's price per 1,000 verdicts, if known.
        big_source: where that price came from (see :func:`big_judge_cost`).
    """
    cpu_1000 = 1000 * cpu_seconds / max(n, 1)
    small_usd = cpu_1000 / 3600 * usd_per_cpu_hour
    ratio = big_usd_per_1000 / small_usd if big_usd_per_1000 is not None and small_usd > 0 else None
    return {
        "small_cpu_seconds_per_1000": cpu_1000,
        "small_wall_seconds_per_1000": 1000 * wall_seconds / max(n, 1),
        "usd_per_cpu_hour": usd_per_cpu_hour,
        "small_usd_per_1000": small_usd,
        "big_judge_usd_per_1000": big_usd_per_1000,
        "big_judge_cost_source": big_source,
        "big_over_small": ratio,
    }
