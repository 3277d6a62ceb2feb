"""Data-size ablations: the grid, the marginal-utility curve, and growing an experiment.

* :mod:`engine.ablation.grid` — launch a grid (teacher job, one run per size, seed and value
  of ``ablation.vary``, the untrained student), check it against the workspace, experiment status;
* :mod:`engine.ablation.curve` — points with intervals over seeds and test examples,
  baselines (teacher, zero-shot, majority), what more data buys and costs;
* :mod:`engine.ablation.fit` — curve families, held-out validation, bootstrap bands, "no trend";
* :mod:`engine.ablation.grow` — suggest the next size; add sizes or seeds to an experiment;
* :mod:`engine.ablation.compare` — overlay experiments, their spec diff, the discussion;
* :mod:`engine.ablation.report` — a self-contained HTML report, PNG and CSV, W&B.
"""

from engine.ablation.curve import (
    ALL_VARIANTS,
    Curve,
    Point,
    StageLoss,
    experiment_curve,
    variant_curves,
    variant_losses,
)
from engine.ablation.fit import choose_fit, fit_family
from engine.ablation.grid import (
    Cell,
    check_sizes,
    check_workspace,
    current_jobs,
    experiment_status,
    grid_cells,
    launch_experiment,
)
from engine.ablation.grow import extend_experiment, suggest_next_size

__all__ = [
    "ALL_VARIANTS",
    "Cell",
    "Curve",
    "Point",
    "StageLoss",
    "check_sizes",
    "check_workspace",
    "choose_fit",
    "current_jobs",
    "experiment_curve",
    "experiment_status",
    "extend_experiment",
    "fit_family",
    "grid_cells",
    "launch_experiment",
    "suggest_next_size",
    "variant_curves",
    "variant_losses",
]
