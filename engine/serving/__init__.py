"""Serving models for the dashboard (the Compare page).

* :mod:`engine.serving.server` — start, find and stop ``transformers serve`` for a run or a base;
* :mod:`engine.serving.guard` — runs a server and stops it once nobody has used it for a while;
* :mod:`engine.serving.compare` — ask base, student and teacher the same prompt, side by side.
"""
