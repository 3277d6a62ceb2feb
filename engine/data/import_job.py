"""Import job: read, validate, clean, split and save a data file as one dataset, off the page.

Run by a worker (``python -m engine worker``) as ``main(ctx)`` for job kind ``import``; queue one
with :func:`queue_import`, which refuses bad options, and paths outside the workspace's data
roots (:mod:`engine.data.roots`), before anything is queued; the worker checks the path again. The job runs
:func:`engine.data.importing.import_dataset` with its progress on the job row (reading,
validating, cleaning, near-duplicates, split, saving) and writes the
:class:`~engine.data.report.ImportReport` to ``<workspace>/imports/<job_id>.json``
(:func:`load_report`), where the Data page reads it.

The dataset is written in one transaction, so a refused, failed or cancelled import leaves no
dataset behind. A refused import (bad rows in strict mode, no room for a test split) fails
the job with the report's message; its report is still written, so the page can show why.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from engine.access import Actor, Right, check, done
from engine.context import JobContext
from engine.data.dedup import DEFAULT_THRESHOLD
from engine.data.importing import check_import_options, import_dataset
from engine.data.report import ImportReport, Mode
from engine.data.roots import import_source
from engine.data.shapes import MAX_FIELD_CHARS
from engine.specs import Spec, SpecError, TaskSpec, format_validation_error
from engine.store import Store

KIND = "import"
"""The job kind (see :data:`engine.jobs.REGISTRY`)."""


class ImportRefused(RuntimeError):
    """The file was read but not imported; the message says why (the report has the rows)."""


class ImportJobSpec(Spec):
    """The ``import`` job: the source and every option of :func:`import_dataset`."""

    path: str = Field(min_length=1)
    """The file or saved-dataset folder, as an absolute path (workers run elsewhere); it must lie
    under a data root of the workspace (:mod:`engine.data.roots`)."""
    task: TaskSpec
    """The task the data is for."""
    fmt: str | None = None
    """File format; detected when None."""
    shape: str | None = None
    """Row shape; detected when None."""
    mapping: dict[str, str] | None = None
    """Shape field -> column name, for tabular sources."""
    name: str | None = None
    """Dataset name; the file name without extension when None."""
    test_size: int | float = 0.1
    """Test examples, as a count (int) or a fraction of the cleaned rows (float)."""
    seed: int = 0
    """Seed of the split."""
    mode: Mode = "strict"
    """``strict`` refuses the file if any row is bad; ``valid_only`` imports the good rows."""
    rules: list[str | dict[str, Any]] = Field(default_factory=list)
    """Cleaning rules, by name or as ``{"rule": name, **params}``, applied in order."""
    dedup_threshold: float = DEFAULT_THRESHOLD
    """Similarity at which prompts count as near-duplicates for the split."""
    check_outputs: bool = True
    """For JSON and label tasks, treat an answer that does not parse as a bad row."""
    max_field_chars: int = MAX_FIELD_CHARS
    """The longest text one field may hold."""
    delimiter: str | None = None
    """CSV/TSV cell separator (the format's when None)."""
    quotechar: str | None = None
    """CSV/TSV quote character, ``""`` for none (the format's when None)."""


def import_spec(store: Store, path: str | Path, *, task: TaskSpec, **options: Any) -> ImportJobSpec:
    """The job spec for importing ``path`` with :func:`import_dataset`'s ``options``, checked.

    Raises:
        engine.data.roots.PathNotAllowed: ``path`` is outside the workspace's data roots.
        engine.specs.SpecError: an unknown option or a value of the wrong type (named).
        ValueError: no such file or folder, a file over :data:`~engine.data.roots.MAX_IMPORT_MB`,
            or an option :func:`import_dataset` would refuse.
    """
    import_source(store, path)
    source = Path(path).expanduser()
    if not source.is_absolute():
        source = store.home / source  # as the roots read it: relative to the workspace
    rules = [{"rule": r[0], **r[1]} if isinstance(r, tuple) else r for r in options.pop("rules", None) or []]
    try:
        # Absolute, not resolved: a symlink's own name stays the dataset's default name.
        spec = ImportJobSpec(path=str(source.absolute()), task=task, rules=rules, **options)
    except ValidationError as err:
        raise SpecError(format_validation_error(err, "import options")) from None
    check_import_options(
        task=spec.task,
        test_size=spec.test_size,
        mode=spec.mode,
        rules=spec.rules,
        dedup_threshold=spec.dedup_threshold,
        fmt=spec.fmt,
        shape=spec.shape,
        max_field_chars=spec.max_field_chars,
    )
    return spec


def queue_import(store: Store, path: str | Path, *, task: TaskSpec, actor: Actor, **options: Any) -> str:
    """Check the import of ``path`` (see :func:`import_spec`) and queue it; returns the job id.

    ``options`` are :func:`import_dataset`'s (``name``, ``test_size``, ``mode``, ``rules``,
    ``mapping``, ``dedup_threshold``, ...). Nothing is queued when they are refused.

    Raises:
        engine.access.AccessDenied: ``actor``'s role may not launch (import data).
    """
    check(store, actor, Right.LAUNCH, "import data", Path(path).name)
    spec = import_spec(store, path, task=task, **options)
    job_id = store.enqueue(KIND, spec.model_dump(mode="json"))
    done(store, actor, "import", job_id, file=Path(spec.path).name, name=spec.name)
    return job_id


def main(ctx: JobContext) -> None:
    """Job entry point: import ``ctx.spec`` (an :class:`ImportJobSpec`) and write its report.

    Raises:
        engine.specs.SpecError: the spec is invalid (the message names the field), or its path
            is outside the data roots (:class:`~engine.data.roots.PathNotAllowed`).
        ValueError: no such file, or a file over the import's size limit.
        ImportRefused: nothing was imported; the report (written first) says why.
    """
    try:
        spec = ImportJobSpec.model_validate(ctx.spec)
    except ValidationError as err:
        raise SpecError(format_validation_error(err, "import job spec")) from None
    # Checked again here: a job row need not come from queue_import. The real path is read (a
    # link swapped after this check cannot redirect it); the name stays the path's own.
    source = import_source(ctx.store, spec.path)
    options = spec.model_dump(exclude={"path", "task"})
    options["name"] = spec.name or Path(spec.path).name.split(".")[0]
    ctx.progress(0.0, f"reading {Path(spec.path).name}", force=True)
    dataset_id, report = import_dataset(ctx.store, source, task=spec.task, progress=ctx.progress, **options)
    save_report(ctx.store, ctx.job_id, report)
    ctx.log.info("%s", report.summary())
    if dataset_id is None:
        raise ImportRefused(report.message)
    ctx.progress(1.0, report.message, force=True)


def report_path(store: Store, job_id: str) -> Path:
    """Where the ``import`` job ``job_id`` writes its report."""
    return store.home / "imports" / f"{job_id}.json"


def save_report(store: Store, job_id: str, report: ImportReport) -> None:
    """Write a job's report atomically (a reader never sees half of it)."""
    path = report_path(store, job_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report.to_dict(), default=str), encoding="utf-8")
    os.replace(tmp, path)


def load_report(store: Store, job_id: str) -> ImportReport | None:
    """The report of the ``import`` job ``job_id``; None until it has one (queued, running,
    or failed before reading the file)."""
    path = report_path(store, job_id)
    if not path.is_file():
        return None
    return ImportReport.from_dict(json.loads(path.read_text(encoding="utf-8")))
