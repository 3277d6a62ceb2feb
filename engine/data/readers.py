"""File readers: bytes on disk to numbered rows, with problems of the file itself reported.

One reader per format; each yields ``(number, value)`` rows where ``number`` is what a person
would look up (a JSONL or CSV line, a JSON array item, a Parquet row) and records problems it
can pin to a row as :class:`~engine.data.report.Issue` s. A problem that stops the whole file
is raised as :class:`Fatal`. Every error the JSON parser can raise (bad syntax, nesting past
the recursion limit, an integer of more than 4,300 digits) is such an issue, never a traceback,
and a parsed row nested deeper than :data:`MAX_DEPTH` is refused before anything recurses
into it. Nothing here knows about row shapes; see :mod:`engine.data.importers`.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.data.report import Issue
from engine.words import plural

TEXT_DIALECTS = {"csv": (",", '"'), "tsv": ("\t", "")}
"""Per text format, the default ``(delimiter, quote character)``; ``""`` means no quoting.

A TSV has no quoting unless the user says so: a message that starts with ``"`` is text, not
the opening of a quoted cell (which, with CSV rules, swallows lines up to the next ``"``).
"""
MAX_DEPTH = 64
"""Deepest nesting of lists and objects a JSON row may have (a chat row needs about 5)."""
_SURROGATE = re.compile("[\udc80-\udcff]")
_BOM = b"\xef\xbb\xbf"
_CSV_FIELD_LIMIT = 2**31 - 1  # the largest the csv module takes on every platform
_BIG_INT = re.compile(r"value has (\d+) digits")
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


class Fatal(Exception):
    """A problem that stops the whole file; ``issue`` says what and where."""

    def __init__(self, issue: Issue):
        self.issue = issue


@dataclass
class Source:
    """Rows of one file (or one split of a saved dataset) before shape parsing."""

    name: str
    unit: str
    rows: Iterator[tuple[int, Any]]
    columns: list[str] | None = None
    types: dict[str, Any] = field(default_factory=dict)  # column -> pyarrow type


def fatal(name: str, kind: str, reason: str, line: int | None = None, fld: str | None = None) -> Fatal:
    return Fatal(Issue(name, line, "line", fld, kind, reason, fatal=True))


def _read_bytes(path: Path, name: str) -> bytes:
    data = path.read_bytes()
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise fatal(name, "bad_encoding", "the file is UTF-16 encoded; save it as UTF-8")
    data = data.removeprefix(_BOM)
    if not data.strip():
        raise fatal(name, "empty_file", "the file is empty (no rows)")
    return data


def _jsonl(path: Path, name: str, issues: list[Issue]) -> Iterator[tuple[int, Any]]:
    for n, raw in enumerate(_read_bytes(path, name).split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            reason = (
                f"undecodable bytes (not UTF-8): 0x{raw[err.start]:02x} at byte {err.start + 1} of the line"
            )
            issues.append(Issue(name, n, "line", None, "undecodable", reason))
            continue
        try:
            value = json.loads(text)
        except (ValueError, RecursionError) as err:  # not only JSONDecodeError: see _json_error
            kind, reason = _json_error(err)
            issues.append(Issue(name, n, "line", None, kind, reason))
            continue
        if too_deep(value):
            issues.append(Issue(name, n, "line", _deep_key(value), "too_deep", _DEEP))
            continue
        yield n, value


_DEEP = f"nested too deeply (more than {MAX_DEPTH} levels of lists and objects)"


def _json_error(err: Exception) -> tuple[str, str]:
    """``(kind, reason)`` of any exception ``json.loads`` raises.

    Besides :class:`json.JSONDecodeError` the parser raises :class:`RecursionError` for deep
    nesting (``[[[[...``) and a plain :class:`ValueError` for an integer of more than 4,300
    digits (Python's guard against slow int parsing).
    """
    if isinstance(err, json.JSONDecodeError):
        return "bad_json", f"invalid JSON: {err.msg} (column {err.colno})"
    if isinstance(err, RecursionError):
        return "too_deep", _DEEP
    digits = _BIG_INT.search(str(err))
    if digits:
        limit = sys.get_int_max_str_digits()
        return "bad_json", f"invalid JSON: a number has {digits.group(1)} digits (at most {limit})"
    return "bad_json", f"invalid JSON: {err}"


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether ``value`` nests lists and objects more than ``limit`` levels (without recursing)."""
    stack = [(value, 1)] if isinstance(value, dict | list) else []
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False


def _deep_key(row: Any) -> str | None:
    """The top-level key of a too-deep row that holds the deep part (None for a bare list)."""
    if not isinstance(row, dict):
        return None
    return next((str(k) for k, v in row.items() if too_deep(v, MAX_DEPTH - 1)), None)


def _error_line(text: str, err: Exception) -> int | None:
    """The line of ``text`` where a parser error without a position (see :func:`_json_error`) is."""
    if isinstance(err, json.JSONDecodeError):
        return err.lineno
    if isinstance(err, RecursionError):
        depth = 0
        for token in _JSON_TOKEN.finditer(text):
            char = token.group()
            depth += 1 if char in "[{" else -1 if char in "]}" else 0
            if depth > MAX_DEPTH:
                return text.count("\n", 0, token.start()) + 1
        return None
    digits = _BIG_INT.search(str(err))
    number = re.search(rf"\d{{{sys.get_int_max_str_digits() + 1},}}", text) if digits else None
    return text.count("\n", 0, number.start()) + 1 if number else None


def _json_array(path: Path, name: str, issues: list[Issue]) -> Iterator[tuple[int, Any]]:
    text = _read_bytes(path, name).decode("utf-8", errors="surrogateescape")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as err:
        # One JSON value: an item the parser cannot read stops the whole file.
        kind, reason = _json_error(err)
        raise fatal(name, kind, reason, _error_line(text, err)) from None
    if not isinstance(value, list):
        raise fatal(name, "bad_json", "expected a JSON array of objects (or JSON Lines: one object per line)")
    for n, item in enumerate(value, start=1):
        if too_deep(item):
            issues.append(Issue(name, n, "item", _deep_key(item), "too_deep", _DEEP))
        else:
            yield n, item


def text_dialect(fmt: str, delimiter: str | None = None, quotechar: str | None = None) -> tuple[str, str]:
    """The ``(delimiter, quotechar)`` a CSV or TSV file is read with: ``fmt``'s defaults
    (:data:`TEXT_DIALECTS`) unless given; ``quotechar=""`` reads with no quoting at all.

    Raises:
        ValueError: not one character each, or the same character twice.
    """
    default_delimiter, default_quote = TEXT_DIALECTS.get(fmt, TEXT_DIALECTS["csv"])
    delimiter = default_delimiter if delimiter is None else delimiter
    quotechar = default_quote if quotechar is None else quotechar
    if len(delimiter) != 1 or delimiter in "\r\n":
        raise ValueError(f"delimiter must be one character (not a line break), got {delimiter!r}")
    if len(quotechar) > 1 or quotechar in ("\r", "\n") or quotechar == delimiter:
        raise ValueError(
            f"quotechar must be one character other than the delimiter, or '' for none; got {quotechar!r}"
        )
    return delimiter, quotechar


def _csv(path: Path, name: str, delimiter: str, quotechar: str, issues: list[Issue]) -> Source:
    text = _read_bytes(path, name).decode("utf-8", errors="surrogateescape")
    # The csv module stops the whole file at a cell over 128 KB; the size of a cell is judged
    # per row instead (engine.data.shapes.MAX_FIELD_CHARS), naming its line and column.
    csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))
    quoting = {"quotechar": quotechar} if quotechar else {"quoting": csv.QUOTE_NONE}
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True, **quoting)
    hint = (
        f" (if {quotechar} is text here rather than a quote, read the file with no quote character)"
        if quotechar
        else ""
    )
    try:
        header = [h.strip() for h in next(reader)]
    except (StopIteration, csv.Error) as err:
        raise fatal(name, "unreadable", f"cannot read the header row: {err}{hint}", 1) from None
    bad = [h for h in header if _SURROGATE.search(h)]
    if bad:
        raise fatal(name, "undecodable", "the header has undecodable bytes (not UTF-8)", 1)
    dupes = sorted({h for h in header if header.count(h) > 1 or not h})
    if dupes:
        raise fatal(name, "bad_value", f"column names must be unique and non-empty: {dupes}", 1)

    def rows() -> Iterator[tuple[int, Any]]:
        try:
            for cells in reader:
                line = reader.line_num
                if not cells or cells == [""]:
                    continue
                if len(cells) != len(header):
                    reason = f"{plural(len(cells), 'field')}, but the header has {len(header)}"
                    issues.append(Issue(name, line, "line", None, "ragged_row", reason))
                    continue
                broken = [h for h, c in zip(header, cells, strict=True) if _SURROGATE.search(c)]
                if broken:
                    reason = "undecodable bytes (not UTF-8)"
                    issues.append(Issue(name, line, "line", broken[0], "undecodable", reason))
                    continue
                yield line, dict(zip(header, cells, strict=True))
        except csv.Error as err:
            reason = f"CSV syntax error, the rest of the file was not read: {err}{hint}"
            issues.append(Issue(name, reader.line_num, "line", None, "unreadable", reason, fatal=True))

    return Source(name, "line", rows(), columns=header)


def _parquet(path: Path, name: str) -> Source:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as err:
        raise fatal(name, "unreadable", f"not a readable Parquet file: {err}") from None
    schema = pf.schema_arrow

    def rows() -> Iterator[tuple[int, Any]]:
        n = 0
        for batch in pf.iter_batches(batch_size=4096):
            for row in batch.to_pylist():
                n += 1
                yield n, row

    return Source(name, "row", rows(), columns=schema.names, types={f.name: f.type for f in schema})


def _hf_disk(path: Path, name: str) -> list[Source]:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as err:
        raise fatal(name, "unreadable", f"not a dataset saved with save_to_disk: {err}") from None
    splits = dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"": loaded}
    out = []
    for split, ds in splits.items():
        schema = ds.features.arrow_schema

        def rows(ds: Any = ds) -> Iterator[tuple[int, Any]]:
            n = 0
            for batch in ds.iter(batch_size=1024):
                cols = list(batch)
                for values in zip(*(batch[c] for c in cols), strict=True):
                    n += 1
                    yield n, dict(zip(cols, values, strict=True))

        label = f"{name}[{split}]" if split else name
        out.append(Source(label, "row", rows(), columns=schema.names, types={f.name: f.type for f in schema}))
    return out


def _starts_with_bracket(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(4096).removeprefix(_BOM).lstrip()[:1] == b"["


def open_sources(
    path: Path,
    fmt: str,
    issues: list[Issue],
    *,
    delimiter: str | None = None,
    quotechar: str | None = None,
) -> list[Source]:
    """The row sources of ``path`` read as ``fmt`` (one per split for a saved DatasetDict).

    Row-level problems found while reading are appended to ``issues`` as rows are consumed.
    ``delimiter`` and ``quotechar`` apply to CSV and TSV (see :func:`text_dialect`).

    Raises:
        Fatal: the file cannot be read at all.
        ValueError: a bad delimiter or quote character.
    """
    if fmt == "jsonl" or (fmt == "json" and not _starts_with_bracket(path)):
        return [Source(path.name, "line", _jsonl(path, path.name, issues))]
    if fmt == "json":
        return [Source(path.name, "item", _json_array(path, path.name, issues))]
    if fmt in ("csv", "tsv"):
        return [_csv(path, path.name, *text_dialect(fmt, delimiter, quotechar), issues)]
    if fmt == "parquet":
        return [_parquet(path, path.name)]
    return _hf_disk(path, path.name)
