"""Scoring answers without a model: metrics against references, and rules (label functions).

* :mod:`engine.scoring.metrics` — per-example metrics and their aggregation over a test split;
* :mod:`engine.scoring.rules` — declarative rules as data (parse, dump, apply);
* :mod:`engine.scoring.kinds` — the rule kinds, one typed spec each;
* :mod:`engine.scoring.label_functions` — Python label functions from the workspace's ``rules/``;
* :mod:`engine.scoring.stats` — coverage, overlap and conflict of a set of rules.

LLM judges (which do call a model) live in :mod:`engine.judges`.
"""

from engine.scoring.metrics import METRICS, aggregate, metric_names, register, score

__all__ = ["METRICS", "aggregate", "metric_names", "register", "score"]
