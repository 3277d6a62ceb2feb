"""Fitting a learning curve, and only claiming what the points support.

Three families of curve, each a common shape of learning curves:

* ``power`` — saturating power law ``y = c - a * n^-b`` (3 parameters);
* ``inverse_power`` — inverse power law towards a perfect score, ``y = 1 - a * n^-b``
  (2 parameters; metrics bounded by 1 only);
* ``log_linear`` — ``y = a + b * ln(n)`` (2 parameters);
* ``sigmoid`` — logistic in ``ln(n)``, ``y = c / (1 + exp(-k (ln(n) - m)))`` (3 parameters):
  the S shape of a student that learns the task from scratch (slow start, rise, saturation).

Each is fitted by weighted least squares, the weights from the points' intervals. A family is
fitted only to more sizes than it has parameters, and it is *validated*: fitted again on all
sizes but the largest, it must predict the largest one. The family whose held-out prediction
misses least is chosen, and the report says whether that point fell inside the predicted band.
The band is a parametric bootstrap over the points (each redrawn within its interval, the
intervals widened when the points scatter more than they claim), pooled over every family
that fits the points with a rising trend, so that it also carries the uncertainty of the
curve's shape (families agree within the measured sizes and part ways beyond them). A fit whose rise is not
significant against a flat line (an F-test), or whose parameters sit at a bound, is reported as
"no trend" and predicts nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Values = Sequence[float] | np.ndarray
FAMILIES = ("power", "inverse_power", "log_linear", "sigmoid")
B_BOUNDS = (1e-3, 3.0)
BOOTSTRAP = 200
"""Bootstrap draws for a fit's band."""
Z95 = 1.959964


def _power(n: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    return c - a * n ** (-b)


def _inverse_power(n: np.ndarray, a: float, b: float) -> np.ndarray:
    return 1.0 - a * n ** (-b)


def _log_linear(n: np.ndarray, a: float, b: float) -> np.ndarray:
    return a + b * np.log(n)


def _sigmoid(n: np.ndarray, c: float, k: float, m: float) -> np.ndarray:
    return c / (1.0 + np.exp(-k * (np.log(n) - m)))


@dataclass
class Fit:
    """One family fitted to a set of points."""

    family: str
    params: dict[str, float]
    sizes: list[float]
    draws: np.ndarray = field(repr=False, default_factory=lambda: np.empty((0, 0)))
    """Parameter vectors of the bootstrap refits (one row each)."""
    p_value: float = 1.0
    """F-test of the family against a flat line: small means a real trend."""
    degenerate: str | None = None
    """Why the fit is not a trend (a parameter at a bound, no rise), if so."""
    ensemble: list[Fit] = field(default_factory=list)
    """The other families that fit the same points with a rising trend: their draws join the
    band, so that it carries the uncertainty of the curve's shape too."""

    def predict(self, n: float | Sequence[float] | np.ndarray) -> np.ndarray:
        """The fitted metric at size(s) ``n``."""
        return np.asarray(_FUNCS[self.family](np.asarray(n, float), *self.params.values()), float)

    def _draw_values(self, x: np.ndarray) -> np.ndarray:
        """Predictions at ``x`` of every bootstrap draw, of this family and of the validated
        alternatives in :attr:`ensemble` (shape ``(draws, len(x))``)."""
        parts = [
            _FUNCS[member.family](x[None, :], *(col[:, None] for col in member.draws.T))
            for member in (self, *self.ensemble)
            if len(member.draws)
        ]
        return np.concatenate(parts, axis=0) if parts else np.empty((0, len(x)))

    def band(
        self, n: float | Sequence[float] | np.ndarray, level: float = 0.95
    ) -> tuple[np.ndarray, np.ndarray]:
        """The bootstrap band (``level`` coverage) of the fitted curve at size(s) ``n``."""
        x = np.atleast_1d(np.asarray(n, float))
        ys = self._draw_values(x)
        if not len(ys):
            y = self.predict(x)
            return y, y
        tail = (1 - level) / 2 * 100
        return np.percentile(ys, tail, axis=0), np.percentile(ys, 100 - tail, axis=0)

    def draw_predictions(self, n: float) -> np.ndarray:
        """The fitted value at ``n`` under every bootstrap draw."""
        return self._draw_values(np.atleast_1d(np.asarray(n, float)))[:, 0]

    @property
    def trend(self) -> bool:
        """Whether the points support a rising curve (else "no trend")."""
        return self.degenerate is None and self.p_value < 0.05


_FUNCS: dict[str, Callable[..., np.ndarray]] = {
    "power": _power,
    "inverse_power": _inverse_power,
    "log_linear": _log_linear,
    "sigmoid": _sigmoid,
}
N_PARAMS = {"power": 3, "inverse_power": 2, "log_linear": 2, "sigmoid": 3}
PARAM_NAMES = {
    "power": ("a", "b", "c"),
    "inverse_power": ("a", "b"),
    "log_linear": ("a", "b"),
    "sigmoid": ("c", "k", "m"),
}
K_BOUNDS = (0.1, 8.0)


def families_for(values: Values) -> list[str]:
    """The families that apply: ``inverse_power`` and ``sigmoid`` only for metrics within [0, 1]."""
    bounded = all(0.0 <= v <= 1.0 for v in values)
    return [f for f in FAMILIES if f in ("power", "log_linear") or bounded]


B_GRID = np.geomspace(B_BOUNDS[0], B_BOUNDS[1], 96)
"""Exponents tried first for the power families; each row then refines around its best one."""
B_REFINE = 24


def _fit_many(family: str, x: np.ndarray, ys: np.ndarray, sigma: np.ndarray, cap: float | None) -> np.ndarray:
    """Weighted least-squares parameters of one family for each row of ``ys`` (shape ``(B, n)``).

    The power families are linear in their other parameters once the exponent ``b`` is
    fixed, so each is solved exactly on a grid of ``b`` (vectorised over the rows and the
    grid), then on a finer grid around each row's best ``b``: no iterative solver that may
    not converge, and a bootstrap of hundreds of refits costs milliseconds.
    """
    w = 1.0 / sigma**2  # (n,)
    if family == "log_linear":
        t = np.log(x)
        sw, st, stt = w.sum(), (w * t).sum(), (w * t * t).sum()
        sy, sty = ys @ w, ys @ (w * t)
        det = sw * stt - st * st
        b = (sw * sty - st * sy) / det
        a = (sy - b * st) / sw
        return np.stack([a, b], axis=1)
    rows = np.arange(len(ys))
    if family == "sigmoid":
        return _fit_sigmoid(x, ys, w, 1.0 if cap is None else cap)
    coarse = np.broadcast_to(B_GRID, (len(ys), len(B_GRID)))
    params, chi2 = _given_b(family, x, ys, w, cap, coarse)
    best = np.argmin(chi2, axis=1)
    lo = B_GRID[np.maximum(best - 1, 0)]
    hi = B_GRID[np.minimum(best + 1, len(B_GRID) - 1)]
    fine = np.exp(np.linspace(np.log(lo), np.log(hi), B_REFINE, axis=1))  # (B, F)
    params, chi2 = _given_b(family, x, ys, w, cap, fine)
    best = np.argmin(chi2, axis=1)
    return params[rows, best]


def _fit_sigmoid(x: np.ndarray, ys: np.ndarray, w: np.ndarray, cap: float) -> np.ndarray:
    """The sigmoid family: ``c`` is linear once the slope ``k`` and midpoint ``m`` are fixed,
    so each row is solved on a (k, m) grid, then on a finer grid around its best pair."""
    t = np.log(x)
    ks = np.geomspace(*K_BOUNDS, 24)
    ms = np.linspace(t.min() - 3.0, t.max() + 3.0, 32)
    kk, mm = (g.ravel() for g in np.meshgrid(ks, ms, indexing="ij"))
    rows = np.arange(len(ys))
    params, chi2 = _given_km(
        t, ys, w, cap, np.broadcast_to(kk, (len(ys), kk.size)), np.broadcast_to(mm, (len(ys), mm.size))
    )
    best = np.argmin(chi2, axis=1)
    k0, m0 = params[rows, best, 1], params[rows, best, 2]
    k_step, m_step = np.log(ks[1] / ks[0]), ms[1] - ms[0]
    fine = np.linspace(-1.0, 1.0, 9)
    dk, dm = (g.ravel() for g in np.meshgrid(fine, fine, indexing="ij"))
    k = np.clip(k0[:, None] * np.exp(dk[None, :] * k_step), *K_BOUNDS)
    m = m0[:, None] + dm[None, :] * m_step
    params, chi2 = _given_km(t, ys, w, cap, k, m)
    return params[rows, np.argmin(chi2, axis=1)]


def _given_km(
    t: np.ndarray, ys: np.ndarray, w: np.ndarray, cap: float, k: np.ndarray, m: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Best ``c`` and the weighted chi-square for each row and each (k, m) of that row (``(B, G)``)."""
    s = 1.0 / (1.0 + np.exp(-k[..., None] * (t[None, None, :] - m[..., None])))  # (B, G, n)
    c = np.clip(np.einsum("bn,bgn->bg", ys * w, s) / ((s * s) @ w), 0.0, cap)
    chi2 = (((ys[:, None, :] - c[..., None] * s) ** 2) * w).sum(-1)
    return np.stack([c, k, m], axis=-1), chi2


def _given_b(
    family: str, x: np.ndarray, ys: np.ndarray, w: np.ndarray, cap: float | None, b: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """For each row of ``ys`` and each exponent of that row in ``b`` (``(B, G)``): the best
    linear parameters and the weighted chi-square. Returns ``(params (B, G, p), chi2 (B, G))``."""
    z = x[None, None, :] ** (-b[:, :, None])  # (B, G, n)
    szz = (z * z) @ w  # (B, G)
    if family == "inverse_power":
        r = 1.0 - ys  # y = 1 - a z  <=>  r = a z
        a = np.clip(np.einsum("bn,bgn->bg", r * w, z) / szz, 0.0, None)
        chi2 = (((r[:, None, :] - a[..., None] * z) ** 2) * w).sum(-1)
        return np.stack([a, b], axis=-1), chi2
    # power: y = c - a z, linear in (c, a) for a fixed b
    sw = w.sum()
    sz = z @ w  # (B, G)
    sy = (ys @ w)[:, None]  # (B, 1)
    syz = np.einsum("bn,bgn->bg", ys * w, z)
    det = sw * szz - sz * sz
    c = (sy * szz - sz * syz) / det
    a = (sz * sy - sw * syz) / det
    c = np.where(a < 0, np.broadcast_to(sy / sw, a.shape), c)
    a = np.clip(a, 0.0, None)
    if cap is not None:  # asymptote above the cap: fix c = cap, refit a alone
        over = c > cap
        a_cap = np.clip(np.einsum("bn,bgn->bg", (cap - ys) * w, z) / szz, 0.0, None)
        a = np.where(over, a_cap, a)
        c = np.where(over, cap, c)
    chi2 = (((ys[:, None, :] - (c[..., None] - a[..., None] * z)) ** 2) * w).sum(-1)
    return np.stack([a, b, c], axis=-1), chi2


def _chi2(family: str, params: np.ndarray, x: np.ndarray, y: np.ndarray, sigma: np.ndarray) -> float:
    return float((((y - _FUNCS[family](x, *params)) / sigma) ** 2).sum())


def _f_test(chi2_fit: float, chi2_flat: float, n: int, p: int) -> float:
    """p-value of "the family explains more than a flat line" (F-test, nested models)."""
    from scipy.stats import f as f_dist

    dof = n - p
    if dof <= 0 or chi2_flat <= 0:
        return 1.0
    if chi2_fit <= 1e-12 * chi2_flat:
        return 0.0
    stat = ((chi2_flat - chi2_fit) / (p - 1)) / (chi2_fit / dof)
    return float(f_dist.sf(stat, p - 1, dof)) if stat > 0 else 1.0


def fit_family(
    family: str,
    sizes: Values,
    values: Values,
    errors: Values | None = None,
    cap: float | None = None,
    draws: int = BOOTSTRAP,
    seed: int = 0,
) -> Fit | None:
    """Fit one family to points ``(size, value)`` with standard errors ``errors``.

    Returns None when the family has at least as many parameters as there are points, or
    when it does not converge. ``cap`` bounds the asymptote of ``power`` (default 1.0 for
    values within [0, 1]).
    """
    x, y = np.asarray(sizes, float), np.asarray(values, float)
    p = N_PARAMS[family]
    if len(x) <= p:
        return None
    if cap is None and y.min() >= 0.0 and y.max() <= 1.0:
        cap = 1.0
    if family == "power" and cap is not None:
        cap = max(cap, float(y.max()) + 1e-9)
    spread = float(np.std(y)) or 1e-3
    sigma = np.asarray(errors if errors is not None else [spread] * len(x), float)
    sigma = np.where(np.isfinite(sigma) & (sigma > 0), sigma, max(float(np.nanmax(sigma, initial=0)), 1e-4))
    sigma = np.maximum(sigma, 1e-4)
    params = _fit_many(family, x, y[None, :], sigma, cap)[0]
    chi2 = _chi2(family, params, x, y, sigma)
    w = 1 / sigma**2
    flat = float((w * y).sum() / w.sum())
    chi2_flat = float((((y - flat) / sigma) ** 2).sum())
    fit = Fit(
        family=family,
        params=dict(zip(PARAM_NAMES[family], (float(v) for v in params), strict=True)),
        sizes=[float(v) for v in x],
        p_value=_f_test(chi2, chi2_flat, len(x), p),
    )
    fit.degenerate = _degenerate(fit, x)
    # Points that scatter more than their intervals claim widen the band (over-dispersion).
    scale = math.sqrt(max(1.0, chi2 / (len(x) - p)))
    rng = np.random.default_rng(seed)
    if draws:
        redrawn = y[None, :] + rng.normal(0.0, 1.0, (draws, len(x))) * (sigma * scale)[None, :]
        fit.draws = _fit_many(family, x, redrawn, sigma, cap)
    else:
        fit.draws = np.empty((0, p))
    return fit


def _degenerate(fit: Fit, x: np.ndarray) -> str | None:
    """Why a fit describes no rising trend, if it does not."""
    prm = fit.params
    if fit.family == "log_linear":
        return None if prm["b"] > 0 else "the fitted line does not rise"
    if fit.family == "sigmoid":
        if prm["c"] <= 1e-9:
            return "the fitted curve is flat (c = 0)"
        if not K_BOUNDS[0] * 1.01 < prm["k"] < K_BOUNDS[1] * 0.99:
            return f"the slope sits at its bound (k = {prm['k']:.3g})"
        rise = float(fit.predict(x.max()) - fit.predict(x.min()))
        return None if rise > 1e-6 else "the fitted curve does not rise"
    if prm["a"] <= 1e-9:
        return "the fitted curve is flat (a = 0)"
    if not B_BOUNDS[0] * 1.01 < prm["b"] < B_BOUNDS[1] * 0.99:
        return f"the exponent sits at its bound (b = {prm['b']:.3g})"
    rise = float(fit.predict(x.max()) - fit.predict(x.min()))
    return None if rise > 0 else "the fitted curve does not rise"


@dataclass
class CurveFit:
    """The chosen fit of a curve with its validation, or why there is none."""

    fit: Fit | None
    heldout_size: float | None = None
    heldout_error: float | None = None
    """Held-out prediction minus the measured value at the largest size."""
    inside_band: bool | None = None
    heldout_band: tuple[float, float] | None = None
    candidates: list[dict[str, Any]] = field(default_factory=list)
    reason: str | None = None
    """Why no fit is shown (too few sizes, no trend)."""

    def to_json(self) -> dict[str, Any] | None:
        """``{"family", "params", "heldout_size", "heldout_error", "inside_band", ...}`` or None."""
        if self.fit is None:
            return None
        return {
            "family": self.fit.family,
            "params": self.fit.params,
            "heldout_size": self.heldout_size,
            "heldout_error": self.heldout_error,
            "inside_band": self.inside_band,
            "heldout_band": list(self.heldout_band) if self.heldout_band else None,
            "p_value": self.fit.p_value,
            "candidates": self.candidates,
        }


def choose_fit(
    sizes: Values,
    values: Values,
    errors: Values | None = None,
    cap: float | None = None,
    draws: int = BOOTSTRAP,
) -> CurveFit:
    """Fit every applicable family, validate each on the largest size, and keep the best.

    A family is a candidate when a fit on all sizes but the largest still has more sizes
    than parameters. The held-out band adds the largest point's own error to the fit's
    band (a prediction interval). The chosen family is refitted on every size; when it
    shows no significant rise, the result carries ``reason`` and no fit.
    """
    order = np.argsort(np.asarray(sizes, float))
    x = np.asarray(sizes, float)[order]
    y = np.asarray(values, float)[order]
    err = np.asarray(errors, float)[order] if errors is not None else None
    if len(x) < 4:
        return CurveFit(None, reason=f"a validated fit needs at least 4 sizes ({len(x)} so far)")
    best: tuple[float, str, dict[str, Any]] | None = None
    candidates: list[dict[str, Any]] = []
    for family in families_for(y):
        if len(x) - 1 <= N_PARAMS[family]:
            continue
        small = fit_family(family, x[:-1], y[:-1], None if err is None else err[:-1], cap=cap, draws=draws)
        if small is None:
            continue
        pred = float(small.predict(x[-1]))
        own = float(err[-1]) if err is not None else 0.0
        rng = np.random.default_rng(1)
        spread = small.draw_predictions(x[-1])
        if len(spread):
            spread = spread + rng.normal(0.0, max(own, 1e-9), size=len(spread))
            lo, hi = (float(v) for v in np.percentile(spread, [2.5, 97.5]))
        else:
            lo, hi = pred - Z95 * own, pred + Z95 * own
        row: dict[str, Any] = {
            "family": family,
            "heldout_prediction": pred,
            "heldout_error": pred - float(y[-1]),
            "heldout_band": [lo, hi],
            "inside_band": bool(lo <= y[-1] <= hi),
        }
        candidates.append(row)
        if best is None or abs(row["heldout_error"]) < best[0]:
            best = (abs(row["heldout_error"]), family, row)
    if best is None:
        return CurveFit(None, candidates=candidates, reason="no family could be fitted and validated")
    _, family, row = best
    final = fit_family(family, x, y, err, cap=cap, draws=draws)
    if final is None:
        return CurveFit(None, candidates=candidates, reason=f"the {family} fit did not converge")
    # The band carries the uncertainty of the curve's shape too: every other family that fits
    # these points with a rising trend adds its draws (a held-out check cannot tell two
    # shapes apart within the measured range, and they part ways beyond it).
    for other in families_for(y):
        if other != family:
            member = fit_family(other, x, y, err, cap=cap, draws=draws)
            if member is not None and member.trend:
                final.ensemble.append(member)
    result = CurveFit(
        final,
        heldout_size=float(x[-1]),
        heldout_error=row["heldout_error"],
        inside_band=row["inside_band"],
        heldout_band=(row["heldout_band"][0], row["heldout_band"][1]),
        candidates=candidates,
    )
    if not final.trend:
        why = final.degenerate or f"the rise is not significant (p = {final.p_value:.2f})"
        return CurveFit(None, candidates=candidates, reason=f"no trend: {why}")
    return result


def size_for(fit: Fit, target: float, limit: float = 1e9) -> float:
    """The size at which ``fit`` reaches ``target`` (``inf`` when it never does below ``limit``)."""
    return _solve(lambda n: float(fit.predict(n)), target, limit)


def _solve(f: Callable[[float], float], target: float, limit: float) -> float:
    lo, hi = 1.0, limit
    if f(lo) >= target:
        return lo
    if f(hi) < target:
        return math.inf
    for _ in range(80):  # bisection in log space
        mid = math.sqrt(lo * hi)
        if f(mid) >= target:
            hi = mid
        else:
            lo = mid
    return hi


def size_for_draws(fit: Fit, target: float, limit: float = 1e9) -> np.ndarray:
    """:func:`size_for` under every bootstrap draw (``inf`` where it is never reached)."""
    out = []
    for member in (fit, *fit.ensemble):
        if not len(member.draws):
            continue
        fn, cols = _FUNCS[member.family], member.draws.T

        def at(n: np.ndarray, fn: Callable[..., np.ndarray] = fn, cols: np.ndarray = cols) -> np.ndarray:
            return fn(n, *cols)

        lo, hi = np.ones(len(member.draws)), np.full(len(member.draws), float(limit))
        for _ in range(60):  # bisection in log space, all draws at once
            mid = np.sqrt(lo * hi)
            reached = at(mid) >= target
            hi, lo = np.where(reached, mid, hi), np.where(reached, lo, mid)
        sizes = np.where(at(np.ones(len(lo))) >= target, 1.0, hi)
        out.append(np.where(at(np.full(len(lo), float(limit))) >= target, sizes, np.inf))
    return np.concatenate(out) if out else np.empty(0)


def interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap values (``inf`` kept: an unreachable share shows as inf)."""
    if not len(values):
        return math.nan, math.nan
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(values, [tail, 100 - tail], method="inverted_cdf")
    return float(lo), float(hi)
