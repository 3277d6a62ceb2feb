"""Scoring student outputs: metrics now; rules, LLM judges and calibration plug in here."""

from engine.evaluation.metrics import METRICS, aggregate, metric_names, register, score

__all__ = ["METRICS", "aggregate", "metric_names", "register", "score"]
