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
from typing import TYPE_CHECKING, Any

from pydantic import Field, ValidationError, model_validator

from engine.context import JobContext
from engine.data.roots import PathNotAllowed, resolve_data_path
from engine.judges.small.data import read_items
from engine.judges.small.model import SmallJudgeSpec, train_small_judge
from engine.specs import Spec, SpecError, format_validation_error
from engine.training.model_refs import resolve_model_ref

if TYPE_CHECKING:
    from engine.store import Store


class SmallJudgeJobSpec(Spec):
    """The ``small_judge`` job: where the labelled answers are and how to train."""

    items_path: str | None = None
    """JSONL file of items (one ``{"text", "label", "source"}`` object a line), under the
    workspace's ``judges/`` folder or a data root."""
    items: list[dict[str, Any]] | None = None
    """The items inline, instead of ``items_path``."""
    small_judge: SmallJudgeSpec = Field(default_factory=SmallJudgeSpec)
    """Encoder and training settings."""
    out_dir: str | None = None
    """Output folder under the workspace's ``judges/`` folder; None: ``<workspace>/judges/<job id>``."""

    @model_validator(mode="after")
    def _one_source(self) -> SmallJudgeJobSpec:
        if (self.items_path is None) == (self.items is None):
            raise ValueError("give exactly one of items_path and items")
        return self


def judges_path(store: Store, user_path: str, field: str, *, data_roots: bool = False) -> Path:
    """``user_path`` resolved, if it lies under ``<workspace>/judges`` (or a data root).

    A job row names the file the worker reads and the folder it writes; a crafted row must
    reach neither the server's other files nor another workspace's. ``..`` is refused
    outright and symlinks are followed before the check. The refusal reads the same whether
    or not the path exists.

    Raises:
        engine.data.roots.PathNotAllowed: the path leaves those folders.
    """
    root = (store.home / "judges").resolve()
    given = Path(user_path)
    real = (given if given.is_absolute() else store.home / given).resolve()
    if ".." not in given.parts and real.is_relative_to(root):
        return real
    if data_roots:
        try:
            return resolve_data_path(store, user_path)
        except PathNotAllowed:
            pass
    where = "the workspace's judges/ folder" + (" or a data root" if data_roots else "")
    raise PathNotAllowed(f"small_judge job spec: {field} {user_path!r} is not under {where}")


def main(ctx: JobContext) -> None:
    """Job entry point: train a small judge from ``ctx.spec`` (see :class:`SmallJudgeJobSpec`).

    Raises:
        engine.specs.SpecError: the spec is invalid (the message names the field), its
            encoder is a folder outside the model roots (:mod:`engine.training.model_refs`),
            or ``items_path``/``out_dir`` leave the folders :func:`judges_path` allows.
        ValueError: malformed items, or fewer than two answers of each label.
    """
    try:
        job = SmallJudgeJobSpec.model_validate(ctx.spec)
    except ValidationError as err:
        raise SpecError(format_validation_error(err, "small_judge job spec")) from None
    # Checked again here, not only at launch: a crafted job row must not load any folder.
    encoder = resolve_model_ref(ctx.store, job.small_judge.encoder, "small_judge.encoder")
    spec = job.small_judge.model_copy(update={"encoder": encoder})
    if job.items is not None:
        items = job.items
    else:
        items = read_items(str(judges_path(ctx.store, str(job.items_path), "items_path", data_roots=True)))
    out = ctx.store.home / "judges" / ctx.job_id
    if job.out_dir:
        out = judges_path(ctx.store, job.out_dir, "out_dir")
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
