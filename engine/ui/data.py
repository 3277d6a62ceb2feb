"""What the Data page shows about a file before import, and about stored datasets.

The page only draws: saving an upload, previewing a source, guessing a column mapping, a dry
run of the import (validation and cleaning, nothing written) and the tables of its report
are computed here, without Streamlit. The import itself is
:func:`engine.data.importing.import_dataset`, which writes all or nothing; the page queues it
as an ``import`` job (:func:`start_import`) and follows it (:func:`import_state`).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import ValidationError

from engine.access import Actor, Right, check
from engine.data.cleaning import RuleSpec, apply_rules
from engine.data.columns import guess_columns
from engine.data.import_job import load_report, queue_import
from engine.data.importers import read_records
from engine.data.importing import _check_outputs, import_info
from engine.data.readers import Fatal, open_sources
from engine.data.report import ImportReport, Issue, Record
from engine.data.roots import PathNotAllowed, import_source, resolve_data_path
from engine.data.shapes import MAX_FIELD_CHARS, detect_shape
from engine.data.sniff import detect_format
from engine.specs import SpecError, TaskSpec
from engine.store import ACTIVE, Store
from engine.ui.common import start_scheduler
from engine.words import plural

DELIMITERS = {"comma (,)": ",", "semicolon (;)": ";", "tab": "\t", "pipe (|)": "|"}
"""CSV cell separators the page offers, by label."""
QUOTES = {'double quote (")': '"', "single quote (')": "'", "none": ""}
"""CSV quote characters the page offers, by label (``none``: quotes are text)."""
TABULAR = ("csv", "tsv", "parquet", "hf_disk")
"""Formats whose columns are mapped to fields by the user."""
_SHAPE_ANSWERS = {
    "alpaca": ("output", "response"),
    "prompt_completion": ("completion",),
    "io": ("output", "reference"),
}
GUESS_ROWS = 500
"""Rows read to guess the prompt and answer columns from their content."""


MAX_UPLOAD_NAME = 100
"""Longest stored upload name in UTF-8 bytes (file systems allow 255; names can be longer)."""


def upload_name(filename: str) -> str:
    """A safe, short file name for an upload: word characters, ``.``, ``-``; extension kept.

    Browsers send the name as the user's file system had it, which may be longer than this
    one allows (``OSError: File name too long``) or hold path separators and odd characters.
    """
    name = re.sub(r"[^\w.\-]+", "_", Path(filename).name).strip("._") or "upload"
    stem, dot, ext = name.rpartition(".")
    if not dot or len(ext) > 16:  # no extension (a sniffed file), or not really one
        stem, ext = name, ""
    suffix = f".{ext}" if ext else ""
    room = MAX_UPLOAD_NAME - len(suffix.encode())
    stem = stem.encode()[:room].decode("utf-8", errors="ignore").rstrip("._") or "upload"
    return stem + suffix


def save_upload(store: Store, filename: str, data: bytes, *, actor: Actor) -> Path:
    """Save uploaded bytes under ``<home>/uploads/<content hash>/<name>``; returns the path.

    ``name`` is :func:`upload_name` of ``filename``. Content-addressed, so re-running the page
    does not write the same upload twice, and written through a temporary file, so a
    half-written upload is never read.

    Raises:
        engine.access.AccessDenied: ``actor``'s role may not import data.
    """
    check(store, actor, Right.LAUNCH, "upload data", filename)
    name = upload_name(filename)
    folder = store.home / "uploads" / hashlib.sha256(data).hexdigest()[:16]
    path = folder / name
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{name}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return path


@dataclass
class SourcePreview:
    """The first rows of a source as read, before any shape or mapping.

    Attributes:
        fmt: the detected format, or None.
        columns: column names of a tabular source (CSV, TSV, Parquet, saved dataset), else None.
        rows: the first rows (one column per key; nested values as text).
        error: why the source cannot be read at all, or None.
        guess: the likely ``prompt`` and ``answer`` columns of a tabular source, from their
            names and the first :data:`GUESS_ROWS` rows (see :func:`guess_columns`).
    """

    fmt: str | None
    columns: list[str] | None = None
    rows: pd.DataFrame = field(default_factory=pd.DataFrame)
    error: str | None = None
    guess: dict[str, str | None] = field(default_factory=lambda: {"prompt": None, "answer": None})

    @property
    def needs_mapping(self) -> bool:
        """Whether the user should say which columns hold the prompt and the answer."""
        return self.fmt in TABULAR and self.columns is not None


def source_format(store: Store, path: str | Path) -> str | None:
    """The format of a file or folder under the data roots, from its extension or its content
    (None: unknown, missing, or outside the roots)."""
    try:
        p = resolve_data_path(store, path)
        return detect_format(p) if p.exists() else None
    except (OSError, PathNotAllowed):
        return None


def preview_source(
    store: Store,
    path: str | Path,
    fmt: str | None = None,
    n: int = 5,
    delimiter: str | None = None,
    quotechar: str | None = None,
) -> SourcePreview:
    """Format, columns and the first ``n`` rows of a file or saved-dataset folder under the
    workspace's data roots (:mod:`engine.data.roots`); ``error`` says why there are none.

    ``delimiter`` and ``quotechar`` are for CSV and TSV, as in
    :func:`~engine.data.importers.read_records`.
    """
    try:
        p = resolve_data_path(store, path)
    except PathNotAllowed as err:
        return SourcePreview(None, error=str(err))
    if not p.exists():
        return SourcePreview(None, error=f"{path}: no such file or folder")
    fmt = fmt or detect_format(p)
    if fmt is None:
        return SourcePreview(
            None,
            error=f"{p.name}: cannot tell the format from the name or the content (JSON Lines, JSON, "
            "CSV, TSV or Parquet)",
        )
    try:
        sources = open_sources(p, fmt, [], delimiter=delimiter, quotechar=quotechar)
        columns = sources[0].columns
        rows = [row for _, row in itertools.islice(sources[0].rows, max(n, GUESS_ROWS if columns else n))]
    except Fatal as err:
        return SourcePreview(fmt, error=str(err.issue))
    except (OSError, ValueError) as err:
        return SourcePreview(fmt, error=f"{p.name}: {err}")
    flat = [r if isinstance(r, dict) else {"value": r} for r in rows[:n]]
    frame = pd.DataFrame(flat).map(lambda v: v if isinstance(v, str | int | float | type(None)) else str(v))
    guess = guess_columns(columns, [r for r in rows if isinstance(r, dict)]) if columns else None
    return SourcePreview(fmt, columns, frame, guess=guess or {"prompt": None, "answer": None})


def column_mapping(prompt: str | None, answer: str | None, instruction: str | None = None) -> dict[str, str]:
    """The ``mapping`` for :func:`~engine.data.importers.read_records` from the chosen columns.

    With an instruction column the rows read as instruction/input/output (the prompt column
    is then the input); otherwise as prompt/completion. Empty when nothing is chosen
    (column names decide).
    """
    if instruction:
        mapping = {"instruction": instruction, "input": prompt, "output": answer}
    else:
        mapping = {"prompt": prompt, "completion": answer}
    return {k: v for k, v in mapping.items() if v}


def auto_mapping_ok(columns: list[str] | None, answer: str | None = None) -> bool:
    """Whether the column names alone say which is the prompt (``prompt``, ``input``, ...)
    and, when an ``answer`` column was guessed, read it as the answer."""
    shape = detect_shape(columns or [])
    return shape is not None and (answer is None or answer in _SHAPE_ANSWERS.get(shape, ()))


def make_task(
    name: str, kind: str, labels: str = "", fields: str = "", template: str = "{input}"
) -> TaskSpec:
    """A task from the page's inputs; ``labels`` and ``fields`` are comma-separated.

    Raises:
        SpecError: one line per refused field, e.g. ``task.prompt_template: ...``.
    """
    spec = {
        "name": name or "task",
        "output_kind": kind,
        "labels": [s.strip() for s in labels.split(",") if s.strip()],
        "json_fields": [s.strip() for s in fields.split(",") if s.strip()],
        "prompt_template": template,
    }
    try:
        return TaskSpec.model_validate(spec)
    except ValidationError as err:
        raise SpecError(
            "\n".join(
                ".".join(["task", *map(str, e["loc"])]) + ": " + e["msg"].removeprefix("Value error, ")
                for e in err.errors()
            )
        ) from None


@dataclass
class ImportCheck:
    """A dry run of an import: what it would read, refuse and clean. Nothing is written.

    Attributes:
        report: issues, per-rule cleaning counts and dropped rows (as the import would report).
        records: the rows that would be imported (valid and kept by cleaning).
    """

    report: ImportReport
    records: list[Record]

    def preview(self, n: int = 20) -> pd.DataFrame:
        """The first ``n`` rows that would be imported: ``where, input, output``."""
        rows = [(_where(r), r["input"], r["output"]) for r in self.records[:n]]
        return pd.DataFrame(rows, columns=["where", "input", "output"])


def _where(rec: Record) -> str:
    src = rec["meta"].get("source") or {}
    unit = next((u for u in ("line", "item", "row") if u in src), None)
    return f"{src.get('file', '')} {unit} {src[unit]}" if unit else str(src.get("file", ""))


def check_import(
    store: Store,
    path: str | Path,
    *,
    task: TaskSpec,
    fmt: str | None = None,
    mapping: dict[str, str] | None = None,
    rules: Sequence[RuleSpec] = (),
    check_outputs: bool = True,
    max_field_chars: int = MAX_FIELD_CHARS,
    delimiter: str | None = None,
    quotechar: str | None = None,
) -> ImportCheck:
    """Validate and clean a source exactly as :func:`~engine.data.importing.import_dataset`
    would, without writing anything; ``report.message`` says what importing would do.

    Raises:
        engine.data.roots.PathNotAllowed: ``path`` is outside the workspace's data roots.
        ValueError: no such file, a file over the import's size limit, invalid rules or
            parameters.
    """
    records, report = read_records(
        import_source(store, path),
        fmt=fmt,
        mapping=mapping or None,
        max_field_chars=max_field_chars,
        delimiter=delimiter,
        quotechar=quotechar,
    )
    if check_outputs and not report.fatal:
        records = _check_outputs(task, records, report.shape, report)
    if report.fatal:
        report.message = "The file cannot be read as a whole: fix it and validate again."
        return ImportCheck(report, [])
    if rules and records:
        records, report.dropped, report.cleaning = apply_rules(records, rules)
    cleaned = f", {len(records)} left after cleaning" if rules else ""
    if report.issues:
        report.message = (
            f"{_plural(report.bad_rows, 'bad row')}, {report.rows_valid} valid{cleaned}: import the valid "
            "rows, or fix the file (a strict import refuses it)."
        )
    else:
        report.message = f"All {_plural(report.rows_valid, 'row')} are valid{cleaned}."
    return ImportCheck(report, records)


def start_import(store: Store, path: str | Path, *, task: TaskSpec, actor: Actor, **options: Any) -> str:
    """Queue the import of ``path`` as a job and wake the scheduler; returns the job id.

    ``options`` are :func:`~engine.data.importing.import_dataset`'s.

    Raises:
        engine.access.AccessDenied: ``actor``'s role may not import data.
        engine.data.roots.PathNotAllowed: ``path`` is outside the workspace's data roots.
        ValueError: no such file, a file over the size limit, or an option the import would
            refuse (nothing is queued).
    """
    job_id = queue_import(store, path, task=task, actor=actor, **options)
    start_scheduler(store)
    return job_id


@dataclass(frozen=True)
class ImportState:
    """Where a queued import stands, as the page shows it.

    Attributes:
        job_id: the ``import`` job.
        status: the job's status (``queued`` ... ``cancelled``).
        fraction: its progress, 0..1.
        message: what it is doing while it runs; once it is over, the outcome in a sentence
            (the report's message, or why the job failed).
        dataset_id: the dataset it imported (or found already imported), once it has.
        report: the import's report, once there is one.
    """

    job_id: str
    status: str
    fraction: float
    message: str
    dataset_id: str | None = None
    report: ImportReport | None = None

    @property
    def active(self) -> bool:
        """Still queued or running."""
        return self.status in ACTIVE


def import_state(store: Store, job_id: str) -> ImportState | None:
    """The state of the ``import`` job ``job_id`` (see :class:`ImportState`); None when this
    workspace has no such job (the sidebar switched workspaces since it was queued)."""
    job = store.get_job(job_id)
    if job is None:
        return None
    status, report = job["status"], load_report(store, job_id)
    fraction = float(job["progress"] or 0.0)
    if status in ACTIVE:
        waiting = "Waiting for the scheduler to start the import…" if status == "queued" else "Starting…"
        return ImportState(job_id, status, fraction, job["message"] or waiting)
    if report is not None:  # imported, or refused with reasons
        return ImportState(job_id, status, fraction, report.message, report.dataset_id, report)
    if status == "cancelled":
        message = "The import was cancelled: nothing was written."
    else:
        message = f"The import failed: {job['error'] or 'see its log on the Runs page'}. Nothing was written."
    return ImportState(job_id, status, fraction, message)


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def test_count(share: float, n: int) -> int:
    """Test examples for a test ``share`` of ``n`` rows: at least 1, leaving at least 1 to train."""
    return max(1, min(n - 1, round(share * n)))


def issues_frame(report: ImportReport) -> pd.DataFrame:
    """Every problem: ``file, line, field, kind, reason`` (``line`` counts lines, items or rows)."""
    return pd.DataFrame(
        [(i.file, _line(i), i.field or "", i.kind, i.reason) for i in report.issues],
        columns=["file", "line", "field", "kind", "reason"],
    )


def _line(issue: Issue) -> str:
    return (
        ""
        if issue.line is None
        else (str(issue.line) if issue.unit == "line" else f"{issue.unit} {issue.line}")
    )


def cleaning_frame(report: ImportReport | dict[str, Any]) -> pd.DataFrame:
    """Per rule, in order: ``rule, params, before, after, dropped, changed``."""
    counts = report.cleaning if isinstance(report, ImportReport) else report.get("cleaning") or []
    rows = [
        {**c, "params": ", ".join(f"{k}={v}" for k, v in c["params"].items() if v is not None)}
        for c in counts
    ]
    return pd.DataFrame(rows, columns=["rule", "params", "before", "after", "dropped", "changed"])


def dropped_frame(report: ImportReport | dict[str, Any]) -> pd.DataFrame:
    """Every row cleaning dropped: ``where, rule, reason, input``."""
    dropped = report.dropped if isinstance(report, ImportReport) else report.get("dropped") or []
    rows = [(d.get("where", ""), d["rule"], d["reason"], d.get("input", "")) for d in dropped]
    return pd.DataFrame(rows, columns=["where", "rule", "reason", "input"])


def datasets_frame(store: Store) -> pd.DataFrame:
    """Every dataset, newest first: ``name, version, id, kind, train, test, source, created``."""
    datasets = store.list_datasets()
    version: dict[str, int] = {}
    for name in {d["name"] for d in datasets}:
        same = sorted((d for d in datasets if d["name"] == name), key=lambda d: (d["created_at"], d["id"]))
        version.update({d["id"]: v for v, d in enumerate(same, start=1)})
    rows = []
    for d in datasets:
        info = import_info(store, d["id"]) or {}
        rows.append(
            {
                "name": d["name"],
                "version": version[d["id"]],
                "id": d["id"],
                "kind": d["task"].get("output_kind", "text"),
                "train": d["n_train"],
                "test": d["n_test"],
                "source": Path(info["source"]).name if info.get("source") else "built in",
                "created": pd.Timestamp(d["created_at"], unit="s").strftime("%Y-%m-%d %H:%M"),
            }
        )
    cols = ["name", "version", "id", "kind", "train", "test", "source", "created"]
    return pd.DataFrame(rows, columns=cols)


def dataset_labels(frame: pd.DataFrame) -> dict[str, str]:
    """Selector label per dataset id (from :func:`datasets_frame`): ``name vN · id · sizes``."""
    return {
        r.id: f"{r.name} v{r.version} · {r.id} · {r.train} train / {r.test} test" for r in frame.itertuples()
    }


def import_summary(info: dict[str, Any]) -> str:
    """One sentence from a dataset's ``import.json``: source, format, mode, rows kept."""
    return (
        f"From `{info['source']}` ({info['fmt']}, {info['shape']}), mode {info['mode']}: "
        f"{info['rows_valid']} of {plural(info['rows_read'], 'row')} valid, "
        f"{len(info.get('dropped') or [])} dropped "
        "by cleaning."
    )
