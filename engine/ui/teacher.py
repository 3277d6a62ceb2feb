"""What the Teacher page shows and builds, computed without Streamlit.

The page's endpoint and prompt forms become specs here (validated, with every refused field
named), playground rows come from a stored dataset, the demo task or typed text, and the
live table of teacher jobs is built from the store.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from engine import jobs
from engine.specs import ExperimentSpec, TaskSpec, parse_spec
from engine.store import Store
from engine.teacher.keys import key_choices, key_label, key_status  # noqa: F401  (the page's key picker)
from engine.words import plural

# Form fields of one variant, by dotted spec path. Optional text: "" means None; optional
# numbers: 0 means "no limit" (None).
VARIANT_FIELDS = (
    "teacher.kind",
    "teacher.base_url",
    "teacher.model",
    "teacher.revision",
    "teacher.api_key_env",
    "teacher.temperature",
    "teacher.max_tokens",
    "teacher.concurrency",
    "teacher.requests_per_minute",
    "teacher.tokens_per_minute",
    "teacher.price_input_per_m",
    "teacher.price_output_per_m",
    "teacher.demo_error_rate",
    "task.system_prompt",
    "task.prompt_template",
)
OPTIONAL_TEXT = ("teacher.base_url", "teacher.revision", "teacher.api_key_env")
OPTIONAL_NUMBERS = ("teacher.requests_per_minute", "teacher.tokens_per_minute")
KINDS = ("demo", "openai", "local")


def variant_defaults(spec: ExperimentSpec) -> dict[str, Any]:
    """Initial form values (dotted key -> widget value) from a spec."""
    data = spec.model_dump(mode="json")
    values: dict[str, Any] = {}
    for key in VARIANT_FIELDS:
        section, name = key.split(".")
        value = data[section][name]
        if key in OPTIONAL_TEXT:
            value = value or ""
        elif key in OPTIONAL_NUMBERS:
            value = value or 0
        values[key] = value
    return values


def variant_spec(base: ExperimentSpec, values: Mapping[str, Any], source: str = "variant") -> ExperimentSpec:
    """The spec ``base`` with a variant's form values applied, validated.

    Raises:
        engine.specs.SpecError: some value is refused (every such field is named).
    """
    data = base.model_dump(mode="json")
    for key, raw in values.items():
        section, name = key.split(".")
        value = raw
        if key in OPTIONAL_TEXT:
            value = str(raw or "").strip() or None
        elif key in OPTIONAL_NUMBERS:
            value = int(raw) if raw else None
        data[section][name] = value
    return parse_spec(data, source=source)


# ----------------------------------------------------------------------------- rows
def dataset_choices(store: Store) -> dict[str, str]:
    """Stored datasets for the row picker: id -> label."""
    return {
        d["id"]: f"{d['name']} · {plural(d['n_train'] + d['n_test'], 'example')} · {d['id']}"
        for d in store.list_datasets()
    }


def dataset_task(store: Store, dataset_id: str) -> TaskSpec | None:
    """The task a stored dataset was built for (None if it no longer parses)."""
    ds = store.get_dataset(dataset_id)
    try:
        return TaskSpec.model_validate(ds["task"]) if ds else None
    except ValueError:
        return None


def dataset_rows(store: Store, dataset_id: str, limit: int = 200) -> list[dict[str, Any]]:
    """The first ``limit`` examples of a dataset as playground rows (``idx, input, reference``)."""
    # Only the first rows: a page reruns often and a dataset may hold millions of examples.
    with store.read() as conn:
        found = conn.execute(
            "SELECT idx, input, reference FROM examples WHERE dataset_id=? ORDER BY idx LIMIT ?",
            (dataset_id, int(limit)),
        )
        return [{"idx": r[0], "input": r[1], "reference": r[2]} for r in found]


def demo_rows(n: int = 20, seed: int = 0) -> list[dict[str, Any]]:
    """Rows of the built-in demo task (when the workspace holds no dataset yet)."""
    from engine.demo.task import generate_examples

    return [
        {"idx": i, "input": e["input"], "reference": e["reference"]}
        for i, e in enumerate(generate_examples(n, seed))
    ]


def typed_rows(text: str) -> list[dict[str, Any]]:
    """One row per non-empty line of ``text`` (no reference)."""
    return [
        {"idx": i, "input": line.strip(), "reference": None}
        for i, line in enumerate(text.splitlines())
        if line.strip()
    ]


def row_label(row: Mapping[str, Any], width: int = 70) -> str:
    """``#idx · input`` shortened for a picker."""
    text = " ".join(str(row["input"]).split())
    return f"#{row['idx']} · {text[:width]}{'…' if len(text) > width else ''}"


# ----------------------------------------------------------------------------- jobs
def teacher_jobs_frame(store: Store, limit: int = 10, now: float | None = None) -> pd.DataFrame:
    """The latest teacher jobs: status, progress, message (answers and cost so far), ETA."""
    from engine.ui.common import format_duration

    rows = []
    for j in store.list_jobs(limit=200):
        if j["kind"] != "teacher":
            continue
        exp = (j.get("spec") or {}).get("experiment") or {}
        teacher = exp.get("teacher") or {}
        rows.append(
            {
                "experiment": exp.get("name", ""),
                "teacher": f"{teacher.get('kind', '')} · {teacher.get('model', '')}",
                "status": j["status"],
                "progress": float(j["progress"] or 0.0),
                "eta": format_duration(jobs.eta_seconds(j, now)),
                "message": j["error"] or j["message"] or "",
                "job": j["id"],
            }
        )
        if len(rows) >= limit:
            break
    columns = ["experiment", "teacher", "status", "progress", "eta", "message", "job"]
    return pd.DataFrame(rows, columns=columns)
