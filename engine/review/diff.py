"""How a student's answer differs from the reference (or the teacher's), in units people read.

A character diff of ``"refund"`` against ``"cancel"`` reads ``rcancefundl``. So answers that
are both JSON objects are compared field by field (``intent: "refund" -> "cancel"``), and any
other text word by word: :mod:`difflib` runs on tokens (words, runs of whitespace, single
punctuation marks), never on characters.
"""

from __future__ import annotations

import difflib
import html
import json
import re
from dataclasses import dataclass
from typing import Any, Literal

DIFF_LIMIT = 4000
"""Characters compared by :func:`token_diff`; longer texts are compared on their start."""

_TOKEN = re.compile(r"\s+|\w+|[^\w\s]")

Op = Literal["equal", "delete", "insert"]


def tokens(text: str) -> list[str]:
    """``'{"a": 1}'`` -> ``['{', '"', 'a', '"', ':', ' ', '1', '}']``; joining gives the text back."""
    return _TOKEN.findall(text)


def token_diff(old: str, new: str) -> list[tuple[Op, str]]:
    """Word diff as ``(op, text)`` segments, op in ``equal``, ``delete``, ``insert``.

    ``delete`` text is in ``old`` only, ``insert`` text in ``new`` only; a changed word is
    deleted and inserted whole. Texts longer than :data:`DIFF_LIMIT` are compared on their
    first DIFF_LIMIT characters.
    """
    a, b = tokens(old[:DIFF_LIMIT]), tokens(new[:DIFF_LIMIT])
    segments: list[tuple[Op, str]] = []

    def add(op: Op, text: str) -> None:
        if not text:
            return
        if segments and segments[-1][0] == op:
            segments[-1] = (op, segments[-1][1] + text)
        else:
            segments.append((op, text))

    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag == "equal":
            add("equal", "".join(a[i1:i2]))
        if tag in ("delete", "replace"):
            add("delete", "".join(a[i1:i2]))
        if tag in ("insert", "replace"):
            add("insert", "".join(b[j1:j2]))
    return segments


@dataclass(frozen=True)
class FieldChange:
    """One field of two JSON objects: ``old``/``new`` are JSON text, None when absent."""

    field: str
    old: str | None
    new: str | None

    @property
    def status(self) -> str:
        """``same``, ``changed``, ``missing`` (only in the old answer) or ``added``."""
        if self.old == self.new:
            return "same"
        return "missing" if self.new is None else "added" if self.old is None else "changed"


def _object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _flatten(obj: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested objects as dotted fields; every other value as compact JSON text."""
    out: dict[str, str] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten(value, name + "."))
        else:
            out[name] = json.dumps(value, ensure_ascii=False)
    return out


def field_diff(old: str, new: str) -> list[FieldChange] | None:
    """Field-by-field comparison when both texts are JSON objects, else None.

    Fields come in the old answer's order, then those only the new one has.
    """
    a, b = _object(old), _object(new)
    if a is None or b is None:
        return None
    fa, fb = _flatten(a), _flatten(b)
    names = [*fa, *(k for k in fb if k not in fa)]
    return [FieldChange(n, fa.get(n), fb.get(n)) for n in names]


_STYLE = {
    "delete": "background:#fde2e1;color:#a4262c;text-decoration:line-through",
    "insert": "background:#dcf5e3;color:#1e6b3a;font-weight:600",
}
_BOX = (
    "font-family:ui-monospace,monospace;font-size:0.9rem;white-space:pre-wrap;word-break:break-word;"
    "padding:0.6rem 0.8rem;border-radius:0.5rem;background:#f3f5f9;line-height:1.5"
)


def _span(op: str, text: str) -> str:
    body = html.escape(text)
    return f'<span class="diff-{op}" style="{_STYLE[op]}">{body}</span>' if op in _STYLE else body


def _fields_html(changes: list[FieldChange]) -> str:
    rows = []
    for c in changes:
        if c.status == "same":
            continue
        parts = []
        if c.old is not None:
            parts.append(_span("delete", c.old))
        if c.status == "changed":
            parts.append(" → ")
        if c.new is not None:
            parts.append(_span("insert", c.new))
        note = {"missing": " (missing)", "added": " (added)"}.get(c.status, "")
        rows.append(f"<div><b>{html.escape(c.field)}</b>: {''.join(parts)}{note}</div>")
    if not rows:
        rows.append("<div>Same fields and values; only the formatting differs.</div>")
    same = [html.escape(c.field) for c in changes if c.status == "same"]
    if same:
        word = "field" if len(same) == 1 else "fields"
        rows.append(f'<div style="color:#6b7280">{len(same)} {word} equal: {", ".join(same)}</div>')
    return "".join(rows)


def diff_html(old: str, new: str) -> str:
    """The diff as one HTML block: per field for two JSON objects, else per word.

    All user text is escaped.
    """
    changes = field_diff(old, new)
    if changes is not None:
        body = _fields_html(changes)
        kind = "fields"
    else:
        body = "".join(_span(op, text) for op, text in token_diff(old, new))
        kind = "words"
    return f'<div class="sensei-diff sensei-diff-{kind}" style="{_BOX}">{body}</div>'
