"""The teacher playground: try a teacher and prompt on a few rows, compare two variants.

Before paying for a teacher to answer a whole dataset, a user tries it on a handful of rows
and compares two variants (another model, another prompt) side by side: the answers, whether
each parses for the task (:func:`engine.data.validate.parse_output`), its score against the
reference when there is one, tokens, latency, cost, and what the full dataset would cost.

Calls are small (at most :data:`MAX_ROWS` rows) and bounded in time (one retry, a short
timeout), so a page may run them synchronously. They go through the same clients and cache as
teacher jobs (:func:`engine.teacher.job.teacher_client`): an answer tried here is free when the
full job asks the same request. A key handed in (e.g. from Streamlit secrets) stays in memory.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from statistics import mean
from typing import Any

import pandas as pd

from engine.access import Actor, Right, check, done
from engine.data.prompts import render_prompt
from engine.data.validate import parse_output
from engine.specs import ExperimentSpec
from engine.store import Store
from engine.teacher import job as teacher_job
from engine.teacher.client import ChatResult, build_messages
from engine.teacher.keys import check_spec_keys, require_declared
from engine.training.model_refs import check_spec_models, resolve_model_ref

MAX_ROWS = 5
"""Rows one playground call may answer."""
PLAYGROUND_TIMEOUT_S = 30.0
"""Per-request timeout of a playground call (with one retry at most)."""


@dataclass
class Variant:
    """One teacher configuration to try: a label and the spec whose task and teacher it uses.

    Attributes:
        label: shown in tables, e.g. ``A`` or ``B``.
        spec: the experiment spec (its ``task`` and ``teacher``; ``data.seed`` for the demo).
        api_key: the key itself when the caller holds it (Streamlit secrets); never stored.
    """

    label: str
    spec: ExperimentSpec
    api_key: str | None = field(default=None, repr=False)


def _score(spec: ExperimentSpec, output: str | None, reference: str | None) -> float | None:
    if output is None or reference is None:
        return None
    from engine.scoring.metrics import score

    return score(spec.task, output, reference).get(spec.curve_metric())


def run_variant(
    store: Store, variant: Variant, rows: list[dict[str, Any]], timeout_s: float = PLAYGROUND_TIMEOUT_S
) -> list[dict[str, Any]]:
    """Answer ``rows`` with one variant's teacher.

    Args:
        store: the workspace (its answer cache; the demo teacher's scratch folder).
        variant: the teacher, prompt and (optionally) key to use.
        rows: ``{"input", "reference"?}`` dicts, at most :data:`MAX_ROWS`.
        timeout_s: per-request timeout (capped; one retry at most).

    Returns:
        One dict per row: ``input, output, error, valid, score, input_tokens, output_tokens,
        latency_s, cost_usd, cached``.

    Raises:
        ValueError: too many rows.
        engine.teacher.keys.UndeclaredKeyError: the key name is not declared on this server.
        engine.training.model_refs.ModelNotAllowed: a local teacher's folder is outside the
            model roots.
        engine.teacher.client.MissingApiKeyError: a key variable is named but unset and no key was given.
        RuntimeError: a local teacher's model cannot be loaded.
    """
    if len(rows) > MAX_ROWS:
        raise ValueError(f"the playground answers at most {MAX_ROWS} rows at once, got {len(rows)}")
    spec = variant.spec
    # Before the cache: an answer cached under an undeclared name (or a refused folder) is not
    # served either.
    require_declared(spec.teacher.api_key_env, f"variant {variant.label}: teacher.api_key_env")
    if spec.teacher.kind == "local":
        resolve_model_ref(store, spec.teacher.model, f"variant {variant.label}: teacher.model")
    teacher = spec.teacher.model_copy(
        update={
            "max_retries": min(spec.teacher.max_retries, 1),
            "timeout_s": min(spec.teacher.timeout_s, timeout_s),
        }
    )
    messages = [build_messages(spec.task, r["input"]) for r in rows]
    scope = teacher_job.cache_scope(spec, store.home)
    cache = store.home / "llm_cache.db"
    if teacher.kind == "demo":
        demo_rows = [
            {"prompt": render_prompt(spec.task.prompt_template, r["input"]), "reference": r.get("reference")}
            for r in rows
        ]
        with teacher_job.demo_endpoint(store.home / "playground", spec, demo_rows) as url:
            results = teacher_job.teacher_client(teacher, cache, scope, url, home=store.home).complete_many(
                messages
            )
    else:
        client = teacher_job.teacher_client(teacher, cache, scope, api_key=variant.api_key, home=store.home)
        results = client.complete_many(messages)
    return [_answer(spec, row, res) for row, res in zip(rows, results, strict=True)]


def _answer(spec: ExperimentSpec, row: dict[str, Any], res: ChatResult) -> dict[str, Any]:
    valid = parse_output(spec.task, res.content)[0] if res.ok else None
    return {
        "input": row["input"],
        "output": res.content,
        "error": res.error,
        "valid": valid,
        "score": _score(spec, res.content, row.get("reference")) if res.ok else None,
        "input_tokens": res.input_tokens,
        "output_tokens": res.output_tokens,
        "latency_s": res.latency_s,
        "cost_usd": res.cost_usd,
        "cached": res.cached,
    }


def summarize(
    variant: Variant, answers: list[dict[str, Any]], dataset_size: int | None = None
) -> dict[str, Any]:
    """One variant's results in numbers, including the projected cost of a full dataset.

    The projection prices the mean tokens per answer (kept even for cached answers, which
    themselves cost nothing) at the teacher's prices, times ``dataset_size``.
    """
    t = variant.spec.teacher
    ok = [a for a in answers if a["error"] is None]
    scores = [a["score"] for a in ok if a["score"] is not None]
    fresh = [a["latency_s"] for a in ok if not a["cached"]]
    per_answer = (
        (
            mean(a["input_tokens"] for a in ok) * t.price_input_per_m
            + mean(a["output_tokens"] for a in ok) * t.price_output_per_m
        )
        / 1e6
        if ok
        else None
    )
    return {
        "variant": variant.label,
        "teacher": f"{t.kind} · {t.model}",
        "answered": f"{len(ok)}/{len(answers)}",
        "valid": (sum(bool(a["valid"]) for a in ok) / len(ok)) if ok else None,
        variant.spec.curve_metric(): mean(scores) if scores else None,
        "tokens": sum(a["input_tokens"] + a["output_tokens"] for a in ok),
        "cached": sum(bool(a["cached"]) for a in ok),
        "mean latency (s)": mean(fresh) if fresh else None,
        "cost (USD)": sum(a["cost_usd"] for a in answers),
        "projected cost (USD)": per_answer * dataset_size
        if per_answer is not None and dataset_size
        else None,
    }


def side_by_side(rows: list[dict[str, Any]], results: dict[str, list[dict[str, Any]]]) -> pd.DataFrame:
    """One line per row: the input, the reference, then per variant its answer (or error),
    validity, score, tokens, latency and whether it came from the cache."""
    table = []
    for i, row in enumerate(rows):
        line: dict[str, Any] = {"input": row["input"], "reference": row.get("reference") or ""}
        for label, answers in results.items():
            a = answers[i]
            line[f"{label} answer"] = a["output"] if a["error"] is None else f"⚠ {a['error']}"
            line[f"{label} valid"] = a["valid"]
            line[f"{label} score"] = a["score"]
            line[f"{label} tokens"] = a["input_tokens"] + a["output_tokens"]
            line[f"{label} latency_s"] = a["latency_s"]
            line[f"{label} cached"] = a["cached"]
        table.append(line)
    return pd.DataFrame(table)


def answer_caption(line: Mapping[str, Any], label: str, metric: str = "score") -> str:
    """A one-line verdict on one answer of a :func:`side_by_side` line, e.g.
    ``A · valid ✓ · score 1.00 · 97 tokens · 0.42 s``."""
    valid = line[f"{label} valid"]
    parts = [label, "error" if valid is None else ("valid ✓" if valid else "invalid ✗")]
    score = line[f"{label} score"]
    if score is not None and score == score:  # NaN in a frame means "no reference"
        parts.append(f"{metric} {score:.2f}")
    if valid is not None:
        parts.append(f"{int(line[f'{label} tokens'])} tokens")
        parts.append("cached" if line[f"{label} cached"] else f"{line[f'{label} latency_s']:.2f} s")
    return " · ".join(parts)


def variant_labels(table: pd.DataFrame) -> list[str]:
    """The variant labels of a :func:`side_by_side` frame, in order."""
    return [str(c).removesuffix(" answer") for c in table.columns if str(c).endswith(" answer")]


def compare(
    store: Store,
    variants: list[Variant],
    rows: list[dict[str, Any]],
    dataset_size: int | None = None,
    timeout_s: float = PLAYGROUND_TIMEOUT_S,
    *,
    actor: Actor,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Answer the same rows with each variant.

    Returns:
        ``(side_by_side, summary)`` frames: answers per row, and numbers per variant.

    Raises:
        engine.access.AccessDenied: ``actor``'s role may not launch (the teacher is paid).
    """
    check(store, actor, Right.LAUNCH, "try teacher variants")
    results = {v.label: run_variant(store, v, rows, timeout_s) for v in variants}
    summary = pd.DataFrame([summarize(v, results[v.label], dataset_size) for v in variants])
    return side_by_side(rows, results), summary


def launch_teacher_job(store: Store, spec: ExperimentSpec, *, actor: Actor) -> str:
    """Queue a teacher-only experiment (answers for the whole dataset, no training); returns its id.

    The scheduler is woken (unless autostart is off), as for a full launch.

    Raises:
        engine.teacher.keys.UndeclaredKeyError: the teacher's key name is not declared.
        engine.training.model_refs.ModelNotAllowed: a local teacher's folder (or the student's)
            is outside the model roots.
        engine.access.AccessDenied: ``actor``'s role may not launch.
    """
    from engine.ui import common as ui

    check(store, actor, Right.LAUNCH, "launch teacher jobs", spec.name)
    check_spec_keys(spec)
    check_spec_models(store, spec)
    spec = spec.model_copy(update={"name": f"{spec.name} · teacher only"[:200]})
    spec_dict = spec.model_dump(mode="json")
    with store.tx() as conn:
        exp_id = store.add_experiment(conn, spec.name, spec_dict, spec.fingerprint())
        job_id = store.add_job(conn, "teacher", {"experiment": spec_dict}, experiment_id=exp_id)
    done(store, actor, "launch teacher job", exp_id, name=spec.name, job=job_id)
    ui.start_scheduler(store)
    return exp_id
