"""Which format a file is in: from its extension, else from its first bytes.

Many public data sets ship as a bare ``NAME`` (the UCI ``SMSSpamCollection``, files saved
from a browser without a suffix) or with a generic one (``.txt``, ``.data``), so a file whose
extension says nothing is judged by its content: Parquet's ``PAR1`` magic bytes, a JSON array
or JSON Lines by the first character, else a header and rows split consistently by tabs
(TSV) or commas (CSV).
"""

from __future__ import annotations

from pathlib import Path

FORMATS = ("jsonl", "json", "csv", "tsv", "parquet", "hf_disk")
"""File formats the readers understand."""
EXTENSIONS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".jsonlines": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
"""Extensions that name a format outright (lower case)."""
SNIFF_BYTES = 65536
"""How much of a file's start :func:`sniff_format` reads."""
_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def detect_format(path: Path) -> str | None:
    """The format of ``path`` from its extension, or its content; None if neither tells."""
    if path.is_dir():
        marks = ("dataset_info.json", "state.json", "dataset_dict.json")
        return "hf_disk" if any((path / m).exists() for m in marks) else None
    if path.suffix.lower() in EXTENSIONS:
        return EXTENSIONS[path.suffix.lower()]
    with path.open("rb") as fh:
        return sniff_format(fh.read(SNIFF_BYTES))


def sniff_format(head: bytes) -> str | None:
    """The format of a file that starts with ``head``, or None for anything else (binary, prose).

    A tab in the first line that splits every sampled line into the same number of fields
    means TSV; otherwise a comma in the first line means CSV. Tabs are tried first: a
    message column is full of commas, a CSV rarely holds tabs.
    """
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.startswith(_UTF16_BOMS):  # read as text so the reader can say "save it as UTF-8"
        text = head[: len(head) // 2 * 2].decode("utf-16", errors="ignore")
    elif b"\0" in head:
        return None
    else:
        text = head.removeprefix(_BOM).decode("utf-8", errors="ignore")
    first = text.lstrip()[:1]
    if first in ("{", "["):
        return "jsonl" if first == "{" else "json"
    lines = text.splitlines()
    if len(head) >= SNIFF_BYTES and len(lines) > 1:
        lines = lines[:-1]  # the last line may be cut short
    lines = [line for line in lines if line.strip()][:50]
    if not lines:
        return None
    tabs = lines[0].count("\t")
    if tabs and sum(line.count("\t") == tabs for line in lines) >= 0.9 * len(lines):
        return "tsv"
    return "csv" if "," in lines[0] else None
