"""Read a task's data from any common format into normalised records, reporting every bad row.

Formats (``fmt``; detected from the extension, else from the content, when not given; see
:mod:`engine.data.sniff`):

* ``jsonl`` — one JSON object per line (``.jsonl``, ``.ndjson``; a ``.json`` file that does not
  start with ``[``). Problems are reported by line number.
* ``json`` — one JSON array of objects; problems by item number.
* ``csv`` / ``tsv`` — a header row, then one row per example; problems by line number. A CSV
  is read with ``"`` quoting and a TSV with none, unless ``delimiter`` / ``quotechar`` say
  otherwise (see :func:`engine.data.readers.text_dialect`).
* ``parquet`` — problems by row number (1-based).
* ``hf_disk`` — a folder written by ``datasets``' ``save_to_disk`` (a ``Dataset`` or a
  ``DatasetDict``, whose splits are all read); problems by row number per split.

Each row is then read as one of the shapes of :mod:`engine.data.shapes`, detected from its
keys or columns. Tabular sources take a ``mapping`` from shape field to column name, e.g.
``{"prompt": "question", "completion": "answer"}``; a null or empty answer cell there means
"no answer" (JSON can omit the key instead, so a JSON ``null`` answer is an error).

Nothing is written here: :func:`read_records` only reads and judges. See
:func:`engine.data.importing.import_dataset` for the all-or-nothing import.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from engine.data.readers import TEXT_DIALECTS, Fatal, Source, fatal, open_sources, text_dialect
from engine.data.report import ImportReport, Issue, Record
from engine.data.shapes import MAX_FIELD_CHARS, SHAPES, RowError, detect_shape, parse_row
from engine.data.sniff import FORMATS, detect_format

MAPPABLE = ("instruction", "input", "output", "prompt", "completion", "messages")
"""Shape fields a tabular ``mapping`` may point at a column."""
_TEXT_FIELDS = {"instruction", "input", "context", "prompt"}
_ANSWER_FIELDS = {"output", "response", "completion", "reference"}


def _check_types(src: Source, shape: str, rename: dict[str, str] | None) -> None:
    """Column types of a typed source (Parquet, HF) against what the shape needs.

    ``rename`` maps columns to shape fields; None means the columns are the fields.
    """
    import pyarrow as pa

    for col, typ in src.types.items():
        key = col if rename is None else rename.get(col)
        if shape == "chat" and key == "messages":
            ok = pa.types.is_list(typ) or pa.types.is_large_list(typ)
            expected = "a list of messages"
        elif key in _TEXT_FIELDS | _ANSWER_FIELDS:
            ok = pa.types.is_string(typ) or pa.types.is_large_string(typ) or pa.types.is_null(typ)
            ok = ok or (key in _ANSWER_FIELDS and (pa.types.is_struct(typ) or pa.types.is_list(typ)))
            expected = "text"
        else:
            continue
        if not ok:
            raise fatal(src.name, "wrong_type", f"column {col!r} holds {typ}, expected {expected}", fld=col)


def _tabular_shape(
    src: Source, shape: str | None, mapping: dict[str, str] | None
) -> tuple[str, dict[str, str]]:
    """Shape and column renaming (column -> shape field) of a source with a header."""
    columns = src.columns or []
    rename: dict[str, str] = {}
    if mapping:
        for key, col in mapping.items():
            if key not in MAPPABLE:
                raise fatal(src.name, "bad_value", f"cannot map {key!r}; use {', '.join(MAPPABLE)}", fld=key)
            if col not in columns:
                reason = f"column {col!r} (mapped to {key}) is not in the file; columns: {', '.join(columns)}"
                raise fatal(src.name, "missing_column", reason, fld=col)
            rename[col] = key
    keys = set(rename.values()) if mapping else set(columns)
    found = shape or detect_shape(keys)
    if found is None:
        reason = (
            f"cannot tell which columns hold the prompt (columns: {', '.join(columns)}); give a mapping "
            'such as {"prompt": "question", "completion": "answer"}'
        )
        raise fatal(src.name, "unknown_format", reason)
    _check_types(src, found, rename if mapping else None)
    return found, rename


def _row_shape(first: tuple[int, Any] | None, src: Source) -> str:
    if first is None:
        raise fatal(src.name, "empty_file", "no readable rows")
    line, row = first
    found = detect_shape(list(row)) if isinstance(row, dict) else None
    if found is None:
        keys = ", ".join(row) if isinstance(row, dict) else type(row).__name__
        reason = (
            f"cannot tell the row format from {keys!r}: expected a 'messages', 'request'+'response', "
            "'instruction', 'prompt' or 'input' field"
        )
        raise Fatal(Issue(src.name, line, src.unit, None, "unknown_format", reason, fatal=True))
    return found


def _display(fld: str | None, back: dict[str, str]) -> str | None:
    """A shape field path as the user's column name (``messages[0].role`` keeps its tail)."""
    if fld is None:
        return None
    head = re.split(r"[.\[]", fld, maxsplit=1)[0]
    return back.get(head, head) + fld[len(head) :]


def _parse(
    src: Source, shape: str | None, mapping: dict[str, str] | None, report: ImportReport, max_chars: int
) -> list[Record]:
    rows = src.rows
    if src.columns is not None:
        shape, rename = _tabular_shape(src, shape, mapping)
    else:
        rename = {}
        listed = list(rows)
        rows = iter(listed)
        shape = shape or _row_shape(next((r for r in listed if isinstance(r[1], dict)), None), src)
    report.shape = shape
    back = {v: k for k, v in rename.items()}
    records: list[Record] = []
    for number, raw in rows:
        row, extra = raw, None
        if src.columns is not None:
            row, extra = {}, {}
            for col, value in raw.items():
                key = rename.get(col, col) if (not mapping or col in rename) else None
                if key is None:
                    extra[col] = value
                elif value is None or value == "":
                    if key not in _ANSWER_FIELDS:  # a null answer cell just means "no answer"
                        row[key] = ""
                else:
                    row[key] = value
        try:
            rec = parse_row(shape, row, extra, max_chars)
        except RowError as err:
            report.issues.append(
                Issue(src.name, number, src.unit, _display(err.field, back), err.kind, err.reason)
            )
            continue
        rec["meta"]["source"] = {"file": src.name, src.unit: number}
        records.append(rec)
    return records


def read_records(
    path: str | Path,
    fmt: str | None = None,
    shape: str | None = None,
    mapping: dict[str, str] | None = None,
    max_field_chars: int = MAX_FIELD_CHARS,
    delimiter: str | None = None,
    quotechar: str | None = None,
) -> tuple[list[Record], ImportReport]:
    """Read and validate a data file (or saved dataset folder) without writing anything.

    Args:
        path: the file or folder.
        fmt: one of :data:`FORMATS`; detected when None.
        shape: one of :data:`~engine.data.shapes.SHAPES`; detected from the keys when None.
        mapping: for CSV/TSV/Parquet/HF sources, shape field -> column name, e.g.
            ``{"instruction": "task", "input": "context", "output": "answer"}``.
        max_field_chars: the longest text one field may hold; a longer one refuses its row
            (``too_large``, naming the line and the field).
        delimiter: CSV/TSV only: the cell separator; ``,`` for CSV and a tab for TSV when None.
        quotechar: CSV/TSV only: the quote character, ``""`` for none; ``"`` for CSV and none
            for TSV when None.

    Returns:
        The valid records (in file order) and the report of every problem found. A fatal
        problem (unreadable file, unknown format, missing mapped column, wrong column type)
        leaves the records empty.
    """
    p = Path(path)
    report = ImportReport(path=str(path), fmt=fmt, max_field_chars=max_field_chars)
    if shape is not None and shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; one of {', '.join(SHAPES)}")
    if fmt is not None and fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    if max_field_chars < 1:
        raise ValueError(f"max_field_chars must be at least 1, got {max_field_chars}")
    records: list[Record] = []
    try:
        if not p.exists():
            raise fatal(p.name, "unreadable", "no such file or folder")
        report.fmt = fmt = fmt or detect_format(p)
        if fmt is None:
            reason = (
                "cannot tell the format from the name or the content (not JSON Lines, a JSON array, "
                f"Parquet, or rows split by tabs or commas); formats: {', '.join(FORMATS)}"
            )
            raise fatal(p.name, "unknown_format", reason)
        if fmt in TEXT_DIALECTS:
            report.delimiter, report.quotechar = text_dialect(fmt, delimiter, quotechar)
        sources = open_sources(p, fmt, report.issues, delimiter=delimiter, quotechar=quotechar)
        for src in sources:
            records.extend(_parse(src, shape, mapping, report, max_field_chars))
    except Fatal as err:
        report.issues.append(err.issue)
    except OSError as err:
        report.issues.append(Issue(p.name, None, "line", None, "unreadable", str(err.strerror or err), True))
    if report.fatal:
        records = []
    elif not records and not report.issues:
        report.issues.append(Issue(p.name, None, "line", None, "empty_file", "the file has no rows", True))
    report.issues.sort(key=lambda i: (not i.fatal, i.file, i.line or 0))
    report.rows_valid = len(records)
    report.rows_read = len(records) + report.bad_rows
    return records, report


def common_system_prompt(records: list[Record]) -> str | None:
    """The system prompt every record shares (chat and log sources), if there is exactly one.

    A task has one system prompt (``TaskSpec.system_prompt``); when every imported
    conversation carries the same one, it belongs there rather than in each example.
    """
    prompts = {r["meta"].get("system") for r in records}
    return prompts.pop() if len(prompts) == 1 and None not in prompts else None
