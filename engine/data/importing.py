"""Import a file as a stored dataset: validate everything first, then write once.

:func:`import_dataset` reads and validates the whole source, cleans it, freezes a seeded test
split and saves the dataset in **one** transaction (:meth:`engine.store.Store.save_dataset`),
so a refused or failed import leaves nothing behind and a half-imported dataset is never
visible. Near-duplicate prompts (see :mod:`engine.data.dedup`) are kept together on one side
of the split, so a paraphrase of a test prompt never sits in the training split; the split is
checked for leaks before anything is written.

Identity: a dataset is content-hashed (task + every example's split, prompt and reference), so
re-importing the same data gives back the same dataset id. Datasets that share a name are
the versions of that name, oldest first (:func:`dataset_versions`).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.data.cleaning import RuleSpec, apply_rules
from engine.data.datasets import dataset_hash
from engine.data.dedup import DEFAULT_THRESHOLD, Leak, check_no_leak, near_duplicate_groups
from engine.data.importers import common_system_prompt, read_records
from engine.data.prompts import render_prompt
from engine.data.report import ImportReport, Issue, Mode, Record
from engine.data.shapes import MAX_FIELD_CHARS
from engine.data.validate import parse_output
from engine.specs import SpecError, TaskSpec, template_problem
from engine.store import Store
from engine.words import plural

DEDUP_THRESHOLD_LABEL = "Near-duplicate threshold"
"""What the Data page calls ``dedup_threshold``; messages name the setting by it."""
_ANSWER_FIELD = {
    "alpaca": "output",
    "prompt_completion": "completion",
    "io": "output",
    "chat": "messages",
    "openai_log": "response",
}


def grouped_test_split(n: int, groups: Sequence[Sequence[int]], n_test: int, seed: int) -> set[int]:
    """Indices of a seeded test split of ``n`` items in which no group is split.

    Groups (and the items in none) are shuffled with a seed stream of their own and taken
    whole while they fit, so the split depends only on ``(n, groups, n_test, seed)``. The test
    split is smaller than ``n_test`` only when the groups leave no way to fill it exactly.
    """
    grouped = {i for g in groups for i in g}
    units = [list(g) for g in groups] + [[i] for i in range(n) if i not in grouped]
    units.sort(key=lambda u: u[0])
    random.Random(f"sensei-split:{seed}").shuffle(units)
    test: set[int] = set()
    for unit in units:
        if len(test) + len(unit) <= n_test:
            test.update(unit)
            if len(test) == n_test:
                break
    return test


def _check_outputs(
    task: TaskSpec, records: list[Record], shape: str | None, report: ImportReport
) -> list[Record]:
    """Records whose reference answer fits the task (JSON object, known label); the rest are issues."""
    if task.output_kind == "text":
        return records
    kept = []
    for rec in records:
        if rec["output"] is not None and not parse_output(task, rec["output"])[0]:
            if task.output_kind == "json":
                reason = f"the answer is not a JSON object with the fields {', '.join(task.json_fields)}"
            else:
                reason = f"the answer is not one of the labels {', '.join(task.labels)}"
            src = rec["meta"].get("source", {})
            unit = next((u for u in ("line", "item", "row") if u in src), "row")
            fld = _ANSWER_FIELD.get(shape or "", "output")
            report.issues.append(Issue(src.get("file", "?"), src.get(unit), unit, fld, "bad_output", reason))
        else:
            kept.append(rec)
    report.issues.sort(key=lambda i: (not i.fatal, i.file, i.line or 0))
    report.rows_valid = len(kept)
    return kept


def _source_digest(path: Path) -> str:
    """sha256 of a file, or of every file of a folder (names and contents)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        digest.update(str(f.relative_to(path) if path.is_dir() else f.name).encode() + b"\0")
        digest.update(f.read_bytes())
    return digest.hexdigest()


def _refuse(report: ImportReport, message: str) -> tuple[None, ImportReport]:
    report.message = message
    return None, report


def import_dataset(
    store: Store,
    path: str | Path,
    *,
    task: TaskSpec,
    fmt: str | None = None,
    shape: str | None = None,
    mapping: dict[str, str] | None = None,
    name: str | None = None,
    test_size: int | float = 0.1,
    seed: int = 0,
    mode: Mode = "strict",
    rules: Sequence[RuleSpec] = (),
    dedup_threshold: float = DEFAULT_THRESHOLD,
    check_outputs: bool = True,
    max_field_chars: int = MAX_FIELD_CHARS,
    delimiter: str | None = None,
    quotechar: str | None = None,
) -> tuple[str | None, ImportReport]:
    """Import a data file as a dataset with a frozen test split, or refuse and write nothing.

    Args:
        store: the workspace.
        path: the file or saved-dataset folder (see :func:`engine.data.importers.read_records`).
        task: the task the data is for (prompt template; answer kind for ``check_outputs``).
        fmt: file format; detected when None.
        shape: row shape; detected when None.
        mapping: shape field -> column name for tabular sources.
        name: dataset name (its versions share it); the file name without extension by default.
        test_size: test examples, as a count (``int``) or a fraction of the cleaned rows.
        seed: seed of the split.
        mode: ``strict`` refuses the file if any row is bad; ``valid_only`` imports the good rows.
        rules: cleaning rules applied before the split (see :mod:`engine.data.cleaning`).
        dedup_threshold: similarity at which prompts count as near-duplicates for the split.
        check_outputs: for JSON and label tasks, treat an answer that does not parse as a bad row.
        max_field_chars: the longest text one field may hold; a row with a longer one is bad.
        delimiter: CSV/TSV cell separator (the format's when None).
        quotechar: CSV/TSV quote character, ``""`` for none (``"`` for CSV, none for TSV when None).

    Returns:
        ``(dataset_id, report)``; the id is None when the import was refused, and the report's
        ``message`` says why.

    Raises:
        ValueError: invalid arguments (test size, threshold, rules).
        SpecError: the task's prompt template is unusable (names ``task.prompt_template``).
    """
    if isinstance(test_size, float) and not 0 < test_size < 1:
        raise ValueError(f"test_size as a fraction must be between 0 and 1, got {test_size}")
    if isinstance(test_size, int) and test_size < 1:
        raise ValueError(f"test_size must be at least 1, got {test_size}")
    if mode not in ("strict", "valid_only"):
        raise ValueError(f"mode must be 'strict' or 'valid_only', got {mode!r}")
    problem = template_problem(task.prompt_template)  # the caller's error, not the file's
    if problem:  # a TaskSpec validates its template; this catches one built with model_construct
        raise SpecError(f"task.prompt_template: prompt_template {problem}")

    records, report = read_records(
        path,
        fmt=fmt,
        shape=shape,
        mapping=mapping,
        max_field_chars=max_field_chars,
        delimiter=delimiter,
        quotechar=quotechar,
    )
    report.mode = mode
    if check_outputs and not report.fatal:
        records = _check_outputs(task, records, report.shape, report)
    if report.fatal:
        return _refuse(report, "Nothing was imported: the file cannot be read as a whole.")
    if mode == "strict" and report.issues:
        return _refuse(
            report,
            f"Nothing was imported: {report.bad_rows} bad rows in strict mode. Fix them, or import "
            "the valid rows only.",
        )
    if not records:
        return _refuse(report, "Nothing was imported: no valid rows.")

    if rules:
        records, report.dropped, report.cleaning = apply_rules(records, rules)
    n = len(records)
    n_test = test_size if isinstance(test_size, int) else round(test_size * n)
    if not 1 <= n_test < n:
        return _refuse(
            report, f"Nothing was imported: {plural(n, 'row')} cannot give a test split of {n_test}."
        )

    inputs = [r["input"] for r in records]
    groups = near_duplicate_groups(inputs, dedup_threshold)
    test = grouped_test_split(n, groups, n_test, seed)
    if not test:
        largest = max(len(g) for g in groups)
        return _refuse(
            report,
            f"Nothing was imported: near-duplicate groups leave no room for a test split of {n_test} (the "
            f"largest holds {largest} of {plural(n, 'row')}). Raise '{DEDUP_THRESHOLD_LABEL}' (now "
            f"{dedup_threshold:g}, at most 1) so that fewer prompts count as near-duplicates, or drop "
            "repeated prompts with the exact_dedup cleaning rule.",
        )
    leaks = check_no_leak(
        [t for i, t in enumerate(inputs) if i not in test],
        [t for i, t in enumerate(inputs) if i in test],
        dedup_threshold,
    )
    if leaks:  # cannot happen: groups hold every pair above the threshold
        raise RuntimeError(f"split leaks {plural(len(leaks), 'near-duplicate test prompt')} into training")

    rows = [
        {
            "idx": i,
            "split": "test" if i in test else "train",
            "input": rec["input"],
            "prompt": render_prompt(task.prompt_template, rec["input"]),
            "reference": rec["output"],
            "meta": rec["meta"],
        }
        for i, rec in enumerate(records)
    ]
    task_dict = task.model_dump(mode="json")
    # Provenance (file, line) lives in meta and is not part of the identity: the same examples
    # imported from a renamed file, or one with blank lines added, are the same dataset.
    content_hash = dataset_hash(task_dict, [{k: v for k, v in r.items() if k != "meta"} for r in rows])
    with store.read() as conn:
        existing = conn.execute("SELECT id FROM datasets WHERE content_hash=?", (content_hash,)).fetchone()
    name = name or Path(path).name.split(".")[0]
    dataset_id = store.save_dataset(name, content_hash, task_dict, rows)
    name = (store.get_dataset(dataset_id) or {}).get("name", name)  # an identical one may have another

    report.imported, report.dataset_id, report.reused = True, dataset_id, existing is not None
    report.n_test, report.n_train, report.dup_groups = len(test), n - len(test), len(groups)
    version = next(v["version"] for v in dataset_versions(store, name) if v["id"] == dataset_id)
    report.message = (
        f"{'Already imported as' if report.reused else 'Imported as'} {name} v{version} ({dataset_id}): "
        f"{report.n_train} train, {plural(report.n_test, 'test example')}"
        + (f", {plural(report.bad_rows, 'bad row')} skipped" if report.issues else "")
        + (f", {plural(len(report.dropped), 'row')} dropped by cleaning" if report.dropped else "")
        + "."
    )
    system = common_system_prompt(records)
    if system and system != task.system_prompt:
        report.message += " Every example has the same system prompt; set it as the task's system prompt."
    if not report.reused:
        _write_provenance(store, dataset_id, Path(path), report, seed, test_size, dedup_threshold, rules)
    return dataset_id, report


def _write_provenance(
    store: Store,
    dataset_id: str,
    path: Path,
    report: ImportReport,
    seed: int,
    test_size: float,
    threshold: float,
    rules: Sequence[RuleSpec],
) -> None:
    """``datasets/<id>/import.json``: where the data came from and how it was imported."""
    folder = store.home / "datasets" / dataset_id
    folder.mkdir(parents=True, exist_ok=True)
    info: dict[str, Any] = {
        "source": str(path.resolve()),
        "source_sha256": _source_digest(path),
        "fmt": report.fmt,
        "shape": report.shape,
        "mode": report.mode,
        "seed": seed,
        "test_size": test_size,
        "dedup_threshold": threshold,
        "max_field_chars": report.max_field_chars,
        "delimiter": report.delimiter,
        "quotechar": report.quotechar,
        "rules": [r if isinstance(r, str | dict) else {"rule": r[0], **r[1]} for r in rules],
        "rows_read": report.rows_read,
        "rows_valid": report.rows_valid,
        "issues": report.issue_rows(),
        "cleaning": report.cleaning,
        "dropped": [{k: d[k] for k in ("rule", "reason", "where")} for d in report.dropped],
        "created_at": time.time(),
    }
    tmp = folder / "import.json.tmp"
    tmp.write_text(json.dumps(info, indent=1, default=str), encoding="utf-8")
    os.replace(tmp, folder / "import.json")


def import_info(store: Store, dataset_id: str) -> dict[str, Any] | None:
    """The provenance written when ``dataset_id`` was imported (None for other datasets)."""
    path = store.home / "datasets" / dataset_id / "import.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def dataset_versions(store: Store, name: str) -> list[dict[str, Any]]:
    """The datasets called ``name``, oldest first, each with ``version`` (1, 2, ...)."""
    rows = [d for d in store.list_datasets() if d["name"] == name]
    rows.sort(key=lambda d: (d["created_at"], d["id"]))
    return [{**d, "version": v} for v, d in enumerate(rows, start=1)]


def split_leaks(
    store: Store,
    dataset_id: str,
    threshold: float = DEFAULT_THRESHOLD,
    train_inputs: Sequence[str] | None = None,
) -> list[Leak]:
    """Test prompts of a stored dataset that (nearly) duplicate a training prompt.

    Args:
        store: the workspace.
        dataset_id: the dataset whose test split is checked.
        threshold: minimum similarity that counts as a leak.
        train_inputs: the training inputs to check against (e.g. a curated training set built
            elsewhere); the dataset's own train split by default.

    Returns:
        The leaks; empty when the test split is clean.
    """
    test = [e["input"] for e in store.get_examples(dataset_id, "test")]
    if train_inputs is None:
        train_inputs = [e["input"] for e in store.get_examples(dataset_id, "train")]
    return check_no_leak(train_inputs, test, threshold)
