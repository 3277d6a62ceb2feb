"""LLM judges and calibration (moving to :mod:`engine.judges`)."""
