"""What an import found: every refused row with its place and reason, and what was done.

An :class:`ImportReport` is filled by :func:`engine.data.importers.read_records` (reading and
validating) and completed by :func:`engine.data.importing.import_dataset` (cleaning, split,
saving). It renders as rows for a table (:meth:`ImportReport.issue_rows`,
:meth:`ImportReport.to_frame`) and as one line for a log (:meth:`ImportReport.summary`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from engine.words import plural

if TYPE_CHECKING:
    import pandas as pd

Mode = Literal["strict", "valid_only"]
"""``strict``: refuse the whole file if any row is bad; ``valid_only``: import the good rows."""

ISSUE_KINDS = (
    "bad_json",
    "too_deep",
    "too_large",
    "undecodable",
    "bad_encoding",
    "missing_field",
    "missing_column",
    "wrong_type",
    "empty_prompt",
    "bad_value",
    "no_user_turn",
    "no_assistant_turn",
    "turn_order",
    "ragged_row",
    "bad_output",
    "empty_file",
    "unknown_format",
    "unreadable",
)
"""Every kind of problem an import can report (the ``kind`` of an :class:`Issue`)."""


class Record(TypedDict):
    """One imported example, whatever its source format.

    ``input`` is the whole user-side text (instruction and input joined, or the conversation
    so far); ``output`` the reference answer when the source has one; ``meta`` the rest
    (``source`` = file, line or row; the original fields; extra columns).
    """

    input: str
    output: str | None
    meta: dict[str, Any]


@dataclass(frozen=True)
class Issue:
    """One problem with one row, or with the whole file (``fatal``; ``line`` may still say where).

    Attributes:
        file: the file's name as the user gave it.
        line: 1-based line (JSONL, CSV), item (JSON array) or row (Parquet, HF) number.
        unit: what ``line`` counts: ``line``, ``item`` or ``row``.
        field: the offending field or column (dotted path such as ``messages[1].role``).
        kind: one of :data:`ISSUE_KINDS`.
        reason: what is wrong, in words.
        fatal: the problem stops the whole file (nothing can be imported from it).
    """

    file: str
    line: int | None
    unit: str
    field: str | None
    kind: str
    reason: str
    fatal: bool = False

    @property
    def where(self) -> str:
        """``data.jsonl line 3`` or just ``data.jsonl``."""
        return f"{self.file} {self.unit} {self.line}" if self.line is not None else self.file

    def __str__(self) -> str:
        fld = f" field {self.field!r}:" if self.field else ""
        return f"{self.where}:{fld} {self.reason}"


@dataclass
class ImportReport:
    """Everything an import found and did.

    Attributes:
        path: the source as given.
        fmt: file format (``jsonl``, ``json``, ``csv``, ``tsv``, ``parquet``, ``hf_disk``).
        shape: row shape (``alpaca``, ``prompt_completion``, ``io``, ``chat``, ``openai_log``).
        rows_read: rows seen (blank JSONL lines are not rows).
        rows_valid: rows that passed validation.
        issues: every problem, in file order.
        mode: the import mode used.
        imported: whether a dataset was saved.
        dataset_id: the saved (or identical, reused) dataset.
        reused: True when an identical dataset already existed.
        message: the outcome in one sentence.
        cleaning: per-rule counts (see :func:`engine.data.cleaning.apply_rules`).
        dropped: rows removed by cleaning, each with ``rule`` and ``reason``.
        n_train: examples in the train split.
        n_test: examples in the frozen test split.
        dup_groups: near-duplicate groups kept whole on one side of the split.
        max_field_chars: the longest text a field could hold (longer ones are ``too_large``).
        delimiter: CSV/TSV only: the cell separator the file was read with.
        quotechar: CSV/TSV only: the quote character it was read with (``""``: no quoting).
    """

    path: str
    fmt: str | None = None
    shape: str | None = None
    rows_read: int = 0
    rows_valid: int = 0
    issues: list[Issue] = field(default_factory=list)
    mode: Mode = "strict"
    imported: bool = False
    dataset_id: str | None = None
    reused: bool = False
    message: str = ""
    cleaning: list[dict[str, Any]] = field(default_factory=list)
    dropped: list[dict[str, Any]] = field(default_factory=list)
    n_train: int = 0
    n_test: int = 0
    dup_groups: int = 0
    max_field_chars: int | None = None
    delimiter: str | None = None
    quotechar: str | None = None

    @property
    def fatal(self) -> bool:
        """A whole-file problem: no row can be imported whatever the mode."""
        return any(i.fatal for i in self.issues)

    @property
    def ok(self) -> bool:
        """No problem at all."""
        return not self.issues

    @property
    def bad_rows(self) -> int:
        """Distinct rows with at least one problem."""
        return len({(i.file, i.line) for i in self.issues if not i.fatal})

    def can_import(self, mode: Mode) -> bool:
        """Whether ``mode`` would import anything: strict needs a clean file, valid-only one good row."""
        if mode == "strict":
            return self.ok and self.rows_valid > 0
        return not self.fatal and self.rows_valid > 0

    def kinds(self) -> dict[str, int]:
        """Issue counts by kind."""
        return dict(Counter(i.kind for i in self.issues))

    def issue_rows(self) -> list[dict[str, Any]]:
        """One dict per issue (``file, line, field, kind, reason``), for a table."""
        return [
            {
                "file": i.file,
                "line": i.line,
                "unit": i.unit,
                "field": i.field,
                "kind": i.kind,
                "reason": i.reason,
            }
            for i in self.issues
        ]

    def to_frame(self) -> pd.DataFrame:
        """The issues as a pandas DataFrame (columns ``file, line, unit, field, kind, reason``)."""
        import pandas as pd

        return pd.DataFrame(self.issue_rows(), columns=["file", "line", "unit", "field", "kind", "reason"])

    def summary(self) -> str:
        """One line: how many rows were read, valid and bad, and the outcome."""
        name = self.path.rstrip("/").rsplit("/", 1)[-1]
        text = f"{name}: {self.rows_valid} of {plural(self.rows_read, 'row')} valid"
        if self.issues:
            kinds = ", ".join(f"{n} {k}" for k, n in sorted(self.kinds().items()))
            text += f"; {plural(len(self.issues), 'problem')} ({kinds})"
        return f"{text}. {self.message}".strip() if self.message else text

    def error_text(self, limit: int = 50) -> str:
        """The issues as lines ``file line N: field 'x': reason`` (at most ``limit``)."""
        lines = [str(i) for i in self.issues[:limit]]
        if len(self.issues) > limit:
            lines.append(f"... and {len(self.issues) - limit} more")
        return "\n".join(lines)
