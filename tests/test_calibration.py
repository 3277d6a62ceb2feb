"""Judge calibration against hand-computed values (no scikit-learn here, so the arithmetic is shown)."""

from __future__ import annotations

import numpy as np
import pytest

from engine.judges.calibration import calibrate, cohen_kappa, compare_judges
from engine.judges.judge import Verdict

pytestmark = pytest.mark.both_backends  # the store tests run on SQLite and PostgreSQL

# The SME table. "accept" is the positive class; the unparsable reply counts as not-accept.
#
#   #   SME     judge        SME error category
#   1   accept  accept
#   2   accept  accept
#   3   accept  accept
#   4   accept  accept
#   5   accept  reject
#   6   accept  unparsable
#   7   reject  accept       prose          <- the judge missed it
#   8   reject  reject       wrong_field
#   9   reject  reject       wrong_field
#  10   reject  reject       prose
#
# TP = 4 (1-4), FN = 2 (5, 6), FP = 1 (7), TN = 3 (8-10); n = 10
# agreement p_o = (4 + 3) / 10 = 0.7
# P(SME accept) = 6/10, P(judge accept) = 5/10
# p_e = 0.6 * 0.5 + 0.4 * 0.5 = 0.5  ->  kappa = (0.7 - 0.5) / (1 - 0.5) = 0.4
# precision = 4 / (4 + 1) = 0.8, recall = 4 / (4 + 2) = 2/3, F1 = 2*4 / (2*4 + 1 + 2) = 8/11
# Had the unparsable reply been read as accept: TP 5, FN 1, p_o 0.8, P(judge accept) 0.6,
# p_e = 0.6*0.6 + 0.4*0.4 = 0.52, kappa = 0.28 / 0.48 = 0.583 -- a flattering, wrong number.
SME = ["accept"] * 6 + ["reject"] * 4
JUDGE = ["accept"] * 4 + ["reject", "unparsable", "accept", "reject", "reject", "reject"]
CATEGORIES = [None] * 6 + ["prose", "wrong_field", "wrong_field", "prose"]


def test_point_estimates_match_the_hand_computed_table() -> None:
    c = calibrate(SME, JUDGE, CATEGORIES, n_boot=0)
    assert (c.n, c.tp, c.fn, c.fp, c.tn) == (10, 4, 2, 1, 3)
    assert c.agreement == pytest.approx(0.7)
    assert c.kappa == pytest.approx(0.4)
    assert c.precision == pytest.approx(0.8)
    assert c.recall == pytest.approx(2 / 3)
    assert c.f1 == pytest.approx(8 / 11)
    assert (c.unparsable, c.errors) == (1, 0)
    assert c.matrix["accept"] == {"accept": 4, "reject": 1, "unparsable": 1, "error": 0}
    assert c.matrix["reject"] == {"accept": 1, "reject": 3, "unparsable": 0, "error": 0}
    assert c.ci == {}

    as_if_accept = calibrate(SME, [*JUDGE[:5], "accept", *JUDGE[6:]], n_boot=0)
    assert as_if_accept.kappa == pytest.approx(0.28 / 0.48)  # what counting unparsable as accept would hide


def test_per_category_breakdown() -> None:
    cats = calibrate(SME, JUDGE, CATEGORIES, n_boot=0).per_category
    assert set(cats) == {"(none)", "prose", "wrong_field"}
    prose, wrong, none = cats["prose"], cats["wrong_field"], cats["(none)"]
    # prose: items 7 (judge accepted: missed) and 10 (rejected) -> agreement 1/2
    assert (prose.n, prose.agreement, prose.judge_accept_rate, prose.missed) == (2, 0.5, 0.5, 1)
    assert (wrong.n, wrong.agreement, wrong.missed) == (2, 1.0, 0)
    # no category: items 1-6, the SME accepted all; the judge rejected 5 and could not parse 6
    assert (none.n, none.false_rejects, none.unparsable) == (6, 2, 1)
    assert none.agreement == pytest.approx(4 / 6)


def test_cohen_kappa_by_hand() -> None:
    # Three labels. a: x x x y y z; b: x x y y z z. Agreement 4/6.
    # Chance: a has x3 y2 z1, b has x2 y2 z2 -> p_e = (3*2 + 2*2 + 1*2) / 36 = 1/3.
    # kappa = (2/3 - 1/3) / (1 - 1/3) = 0.5
    assert cohen_kappa(list("xxxyyz"), list("xxyyzz")) == pytest.approx(0.5)
    # Total disagreement on a balanced set: p_o = 0, p_e = 0.5 -> kappa = -1.
    assert cohen_kappa(["a", "a", "r", "r"], ["r", "r", "a", "a"]) == pytest.approx(-1.0)
    assert cohen_kappa(["a", "a"], ["a", "a"]) is None  # p_e = 1: undefined, not 1 or NaN
    with pytest.raises(ValueError):
        cohen_kappa(["a"], ["a", "r"])


def test_undefined_metrics_are_none_not_nan() -> None:
    never_accepts = calibrate(["accept", "reject"], ["reject", "reject"], n_boot=0)
    assert never_accepts.precision is None and never_accepts.recall == 0.0
    no_sme_accepts = calibrate(["reject", "reject"], ["accept", "reject"], n_boot=0)
    assert no_sme_accepts.recall is None and no_sme_accepts.precision == 0.0


def test_bootstrap_is_seeded_and_matches_a_plain_loop() -> None:
    a = calibrate(SME, JUDGE, n_boot=200, seed=7)
    assert a.ci == calibrate(SME, JUDGE, n_boot=200, seed=7).ci
    assert a.ci != calibrate(SME, JUDGE, n_boot=200, seed=8).ci
    for metric in ("agreement", "kappa", "precision", "recall", "f1"):
        low, high = a.ci[metric]  # type: ignore[misc]
        assert low <= getattr(a, metric) <= high

    # The same resamples, scored one at a time with the scalar kappa.
    idx = np.random.default_rng(7).integers(0, len(SME), size=(200, len(SME)))
    sme = np.array([s == "accept" for s in SME])
    judge = np.array([j == "accept" for j in JUDGE])
    kappas = [cohen_kappa(list(sme[row]), list(judge[row])) for row in idx]
    defined = [k for k in kappas if k is not None]
    assert a.ci["kappa"] == pytest.approx(tuple(np.percentile(defined, [2.5, 97.5])))

    perfect = calibrate(SME, SME, n_boot=100)
    assert perfect.ci["agreement"] == (1.0, 1.0)


def test_inputs_are_checked_and_verdict_objects_accepted() -> None:
    verdicts = [Verdict(v, "r") for v in JUDGE]
    booleans = [s == "accept" for s in SME]
    assert calibrate(booleans, verdicts, n_boot=0).kappa == pytest.approx(0.4)
    with pytest.raises(ValueError, match="10 SME labels but 9"):
        calibrate(SME, JUDGE[:9])
    with pytest.raises(ValueError, match="'maybe'"):
        calibrate(SME, [*JUDGE[:9], "maybe"])
    with pytest.raises(ValueError, match="SME label"):
        calibrate([*SME[:9], "unparsable"], JUDGE)


def test_compare_two_judges_on_the_same_sme_set() -> None:
    # Judge B agrees with the SME everywhere: agreement 1, kappa 1.
    cmp = compare_judges(SME, JUDGE, SME, CATEGORIES, n_boot=300, seed=1)
    assert cmp.a.kappa == pytest.approx(0.4) and cmp.b.kappa == pytest.approx(1.0)
    assert cmp.difference["agreement"] == pytest.approx(0.3)
    assert cmp.difference["kappa"] == pytest.approx(0.6)
    # Paired resamples: on every resample B agrees at least as often as A.
    low, high = cmp.difference_ci["agreement"]  # type: ignore[misc]
    assert 0.0 <= low <= 0.3 <= high
    # Between the judges: B is the SME, so this is A's agreement and kappa again.
    assert cmp.judges_agreement == pytest.approx(0.7)
    assert cmp.judges_kappa == pytest.approx(0.4)
    assert cmp.to_dict()["b"]["per_category"]["prose"]["missed"] == 0
