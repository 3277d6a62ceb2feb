"""Tables and lines the Review page draws, built from :class:`engine.review.items.ReviewItem`."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import pandas as pd

from engine.review.gold import GoldDisagreements
from engine.review.items import ReviewItem
from engine.ui.common import format_ago
from engine.words import plural

FIRST_COLUMNS = ["#", "you", "SMEs", "failed", "rules rejecting"]
TEXT_CHARS = 120
"""Answers are cut to this many characters in the table (the one-at-a-time view shows all)."""


def _short(text: str | None, limit: int = TEXT_CHARS) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def review_link(ref: str) -> str:
    """Relative URL of the Review page opened on item ``ref`` (the page reads ``?item=``)."""
    return f"review?item={quote(ref, safe='')}"


def gold_frame(result: GoldDisagreements) -> pd.DataFrame:
    """One row per training example whose teacher answer differs from the gold one, most
    different first: a link to it on Review, how they differ, the agreement and both answers."""
    rows = [
        {
            "open": review_link(r.ref),
            "#": r.idx,
            "differs in": r.how,
            "agreement": r.agreement,
            "gold": _short(r.gold),
            "teacher": _short(r.teacher),
            "input": _short(r.input),
        }
        for r in result.rows
    ]
    return pd.DataFrame(rows, columns=["open", "#", "differs in", "agreement", "gold", "teacher", "input"])


def run_choice(run: dict[str, Any]) -> str:
    """The answer-set picker's line (a run, or a teacher's answers):
    ``demo · n=200 seed 0 · run-… · 25 answers · 12 labelled``, so labels given on another run
    than the one open are easy to find."""
    answers = plural(run["n_outputs"], "answer")
    return f"{run['label']} · {answers} · {run.get('n_labelled', 0):,} labelled"


def sme_summary(item: ReviewItem) -> str:
    """``2 accept · 1 reject`` over the annotators' current labels, ``""`` when none."""
    accept = sum(a["label"] == "accept" for a in item.labels)
    reject = len(item.labels) - accept
    return " · ".join(f"{n} {what}" for n, what in ((accept, "accept"), (reject, "reject")) if n)


def metric_columns(items: Sequence[ReviewItem]) -> list[str]:
    """Names of the metrics scored on any of ``items``, in first-seen order."""
    return list(dict.fromkeys(k for it in items for k in it.scores))


def items_frame(items: Sequence[ReviewItem], subject: str = "") -> pd.DataFrame:
    """One row per item: labels (``you``: the label of the person with ``subject``), failed,
    rejecting rules, judge verdicts, texts, metrics."""
    judges = sorted({j for it in items for j in it.judges})
    metrics = metric_columns(items)
    rows = []
    for it in items:
        mine = it.label_of(subject) if subject else None
        row: dict[str, Any] = {
            "#": it.idx,
            "you": mine["label"] if mine else "",
            "SMEs": sme_summary(it),
            "failed": it.failed,
            "rules rejecting": ", ".join(it.rejected_rules),
        }
        row.update({f"judge: {j}": it.judges.get(j, {}).get("verdict", "") for j in judges})
        row.update(student=_short(it.student), reference=_short(it.reference))
        row.update({m: it.scores.get(m) for m in metrics})
        rows.append(row)
    columns = [*FIRST_COLUMNS, *(f"judge: {j}" for j in judges), "student", "reference", *metrics]
    return pd.DataFrame(rows, columns=columns)


def checks_frame(item: ReviewItem) -> pd.DataFrame:
    """Every metric, rule and judge verdict on one item, each with its reason."""
    rows: list[dict[str, Any]] = [
        {"check": "metric", "name": k, "result": f"{v:.3f}", "reason": ""} for k, v in item.scores.items()
    ]
    for r in item.rules:
        result = "reject" if not r.passed else "accept" if r.accepted else "pass"
        rows.append({"check": "rule", "name": r.rule, "result": result, "reason": r.reason})
    for name, v in sorted(item.judges.items()):
        rows.append({"check": "judge", "name": name, "result": v["verdict"], "reason": v["reason"]})
    return pd.DataFrame(rows, columns=["check", "name", "result", "reason"])


def label_line(label: dict[str, Any], now: float | None = None) -> str:
    """Markdown line for one label: ``**ada** — reject · wrong field value · 3 min ago``.

    The name and category are escaped (shown as typed); the note is drawn below it with
    :func:`note_markdown`.
    """
    line = f"**{md_escape(label['annotator'])}** — {label['label']}"
    if label.get("category"):
        line += f" · {md_escape(label['category'])}"
    return f"{line} · {format_ago(label['ts'], now)}"


_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)]*)\)")
_DOLLAR = re.compile(r"(?<!\\)\$")


def note_markdown(note: str) -> str:
    """A label's note as a Markdown quote, rendered as its author wrote it (bold, lists, code).

    Nothing is backslash-escaped for show. Two things are changed because Streamlit would
    otherwise act on them: an image becomes a link to it (a note never fetches anything), and
    ``$`` stays a dollar sign instead of starting LaTeX. Raw HTML is never rendered by
    ``st.markdown`` without ``unsafe_allow_html``.
    """
    text = _IMAGE.sub(r"[\1](\2)", note.strip())
    text = _DOLLAR.sub(r"\\$", text)
    return "\n".join(f"> {line}" if line.strip() else ">" for line in text.splitlines())


def history_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Every label an item ever got, newest first."""
    out = [
        {
            "when": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["ts"])),
            "annotator": r["annotator"],
            "label": r["label"],
            "category": r["category"] or "",
            "note": r["note"],
        }
        for r in sorted(rows, key=lambda r: r["id"], reverse=True)
    ]
    return pd.DataFrame(out, columns=["when", "annotator", "label", "category", "note"])


# Only what can start markup in the middle of a line (names and categories never start one):
# escaping more, e.g. "." or "-", would only add backslashes that some renderers show.
_MD_SPECIAL = "\\`*_[]<>|~$"


def md_escape(text: str) -> str:
    """Escape Markdown so a name or category is shown as typed (never as links, HTML or math)."""
    return "".join("\\" + c if c in _MD_SPECIAL else c for c in text.replace("\n", " "))
