"""The ``demo`` data source: generated support messages with a seeded, frozen test split."""

from __future__ import annotations

import random
from typing import Any

from engine.data.prompts import render_prompt
from engine.demo.task import generate_examples
from engine.specs import ExperimentSpec


def split_indices(n: int, test_size: int, seed: int) -> set[int]:
    """Indices of the test split: the last ``test_size`` of a seeded shuffle of ``range(n)``.

    The shuffle has its own seed stream (not the generator's), so the split does not correlate
    with generation order, and it depends only on ``(n, test_size, seed)``: the same spec always
    freezes the same test examples.
    """
    if not 0 < test_size < n:
        raise ValueError(f"test_size must be between 1 and {n - 1}, got {test_size}")
    order = list(range(n))
    random.Random(f"sensei-split:{seed}").shuffle(order)
    return set(order[-test_size:])


def demo_rows(spec: ExperimentSpec) -> list[dict[str, Any]]:
    """Dataset rows (``idx, split, input, prompt, reference, meta``) for a demo-source spec.

    ``idx`` is the generation index, so it is stable for a given seed whatever the split.
    """
    examples = generate_examples(spec.data.demo_examples, spec.data.seed)
    test = split_indices(len(examples), spec.data.test_size, spec.data.seed)
    return [
        {
            "idx": i,
            "split": "test" if i in test else "train",
            "input": ex["input"],
            "prompt": render_prompt(spec.task.prompt_template, ex["input"]),
            "reference": ex["reference"],
            "meta": ex["meta"],
        }
        for i, ex in enumerate(examples)
    ]
