"""Data: sources, content-hashed datasets with a frozen test split, prompt rendering, validity.

* :func:`engine.data.datasets.ensure_dataset` — build or reuse the stored dataset of a spec.
* :func:`engine.data.prompts.render_prompt` — fill a task's template with one input.
* :func:`engine.data.validate.parse_output` — is an answer well-formed for its task?
* :func:`engine.data.roots.resolve_data_path` — may an import read this server path (data roots)?
"""

from __future__ import annotations

from typing import Any

from engine.data.prompts import render_prompt
from engine.data.validate import parse_output

__all__ = ["ensure_dataset", "parse_output", "render_prompt"]


def __getattr__(name: str) -> Any:
    # Imported lazily: engine.data.datasets imports engine.demo.task, which imports
    # engine.data.prompts, so an eager import here would be circular.
    if name == "ensure_dataset":
        from engine.data.datasets import ensure_dataset

        return ensure_dataset
    raise AttributeError(name)
