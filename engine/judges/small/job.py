"""Small-judge job: train a small judge on big-judge verdicts and SME labels.

Run by a worker (``python -m engine worker``) as ``main(ctx)`` for job kind ``small_judge``;
enqueue one with ``store.enqueue("small_judge", spec)`` where spec is::

    {"items_path": "verdicts.jsonl"  # or "items": [{"text", "label", "source"}, ...]
     "small_judge": {...},           # a SmallJudgeSpec; every key optional
     "out_dir": "..."}               # optional; default <workspace>/judges/<job id>

Items are described in :mod:`engine.judges.small.data`; the output folder's
``report.json`` holds held-out agreement and cost (see
:func:`engine.judges.small.model.train_small_judge`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from engine.context import JobContext
from engine.judges.small.data import read_items
from engine.judges.small.model import SmallJudgeSpec, train_small_judge
from engine.specs import Spec, SpecError, format_validation_error
from engine.training.model_refs import resolve_model_ref


class SmallJudgeJobSpec(Spec):
    """The ``small_judge`` job: where the labelled answers are and how to train."""

    items_path: str | None = None
    """JSONL file of items (one ``{"text", "label", "source"}`` object a line)."""
    items: list[dict[str, Any]] | None = None
    """The items inline, instead of ``items_path``."""
    small_judge: SmallJudgeSpec = Field(default_factory=SmallJudgeSpec)
    """Encoder and training settings."""
    out_dir: str | None = None
    """Output folder; None: ``<workspace>/judges/<job id>``."""

    @model_validator(mode="after")
    def _one_source(self) -> SmallJudgeJobSpec:
        if (self.items_path is None) == (self.items is None):
            raise ValueError("give exactly one of items_path and items")
        return self


def main(ctx: JobContext) -> None:
    """Job entry point: train a small judge from ``ctx.spec`` (see :class:`SmallJudgeJobSpec`).

    Raises:
        engine.specs.SpecError: the spec is invalid (the message names the field), or its
            encoder is a folder outside the model roots (:mod:`engine.training.model_refs`).
        ValueError: malformed items, or fewer than two answers of each label.
    """
    try:
        job = SmallJudgeJobSpec.model_validate(ctx.spec)
    except ValidationError as err:
        raise SpecError(format_validation_error(err, "small_judge job spec")) from None
    # Checked again here, not only at launch: a crafted job row must not load any folder.
    encoder = resolve_model_ref(ctx.store, job.small_judge.encoder, "small_judge.encoder")
    spec = job.small_judge.model_copy(update={"encoder": encoder})
    items = job.items if job.items is not None else read_items(str(job.items_path))
    out = Path(job.out_dir) if job.out_dir else ctx.store.home / "judges" / ctx.job_id
    ctx.log.info("small judge %s: %d items -> %s", job.small_judge.name, len(items), out)
    report = train_small_judge(items, spec, out, lambda f, m: ctx.progress(0.95 * f, f"training: {m}"))
    ctx.log.info(
        "held-out accuracy %.3f (majority baseline %.3f), train %.1f s, $%.5f per 1,000 verdicts",
        report["accuracy"],
        report["majority_baseline_accuracy"],
        report["train_seconds"],
        report["cost"]["small_usd_per_1000"],
    )
    ctx.progress(
        1.0, f"accuracy {report['accuracy']:.3f} vs baseline {report['majority_baseline_accuracy']:.3f}"
    )
