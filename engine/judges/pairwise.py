"""Head to head: a pairwise judge says, example by example, which of two answer sets is better.

"Is the student as good as the teacher?" is the question distillation exists for. A pointwise
judge grades each answer alone; a pairwise judge sees the student's and the teacher's answer
to the same input side by side and picks the better one (or a tie), asked in both orders so
position bias cancels out (:func:`engine.judges.judge.judge_pairwise`). Two runs (say
n=200 against n=800) compare the same way.

Run by a worker as ``main(ctx)`` for job kind ``pairwise``; enqueue one with
:func:`launch_pairwise`, or ``store.enqueue("pairwise", spec)`` where spec is::

    {"judge": {...},                          # a JudgeSpec (name, endpoint, rubric, ...)
     "a": {"run_id": "run_..."},              # or {"experiment_id": "exp_...", "teacher": true}
     "b": {"experiment_id": "exp_...", "teacher": true}}

Verdicts go to the store under ``pair:<a>:<b>:<idx>`` refs (``<a>``/``<b>``: a run id or
``teacher.<experiment id>``), winners ``A``/``B``/``tie``; :func:`head_to_head` sums them
into win rates with bootstrap intervals. Calls go through the same cache as every judge.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from typing import Any

from pydantic import ValidationError

from engine.access import Actor, Right, check, done
from engine.context import JobContext
from engine.judges.job import (
    KEY_FIELD,
    JudgeTarget,
    check_endpoint,
    collect_items,
    default_endpoint,
    endpoint_url,
)
from engine.judges.judge import JudgeItem, JudgeSpec, PairItem, judge_pairwise
from engine.review.items import parse_ref
from engine.specs import Spec, SpecError, TeacherSpec, format_validation_error
from engine.store import Store
from engine.teacher.client import ChatClient

JOB_KIND = "pairwise"
PAIR_PREFIX = "pair:"


class PairwiseJobSpec(Spec):
    """The ``pairwise`` job: which judge, and the two answer sets it compares."""

    judge: JudgeSpec
    """Judge name, endpoint, rubric (``mode`` is pairwise)."""
    a: JudgeTarget
    """Answers shown as A in the first order."""
    b: JudgeTarget
    """Answers shown as B in the first order."""


def side_key(target: JudgeTarget) -> str:
    """``run-...`` for a run, ``teacher.<experiment id>`` for an experiment's teacher answers."""
    return target.run_id if target.run_id is not None else f"teacher.{target.experiment_id}"


def pair_ref(a: str, b: str, idx: int) -> str:
    """The item ref of one compared example: ``pair:<a>:<b>:<idx>``."""
    return f"{PAIR_PREFIX}{a}:{b}:{idx}"


def _by_example(store: Store, target: JudgeTarget) -> dict[int, JudgeItem]:
    refs, items = collect_items(store, target)
    out = {}
    for ref, item in zip(refs, items, strict=True):
        parsed = parse_ref(ref)
        if parsed is not None:
            out[int(parsed["idx"])] = item
    return out


def side_dataset(store: Store, target: JudgeTarget) -> str | None:
    """The dataset a side's answers answer (through the run's or the given experiment)."""
    exp_id = target.experiment_id
    if target.run_id is not None:
        exp_id = (store.get_run(target.run_id) or {}).get("experiment_id")
    exp = store.get_experiment(exp_id) if exp_id else None
    return exp.get("dataset_id") if exp else None


def collect_pairs(store: Store, a: JudgeTarget, b: JudgeTarget) -> tuple[list[int], list[PairItem]]:
    """The examples both sides answered, in example order, as pairs (A = ``a``'s answer).

    The reference is the dataset's own gold answer, never a side's: a run whose dataset has
    no gold stores the teacher's answer as its reference, and a judge shown that would hand
    every pair to the teacher.

    Raises:
        ValueError: a side does not exist or has no answers, the sides answer different
            datasets, or they share no example.
    """
    left, right = _by_example(store, a), _by_example(store, b)  # each side exists and answered
    dataset_a, dataset_b = side_dataset(store, a), side_dataset(store, b)
    if dataset_a is None or dataset_a != dataset_b:
        raise ValueError(
            f"the two answer sets answer different datasets ({dataset_a} and {dataset_b}): "
            "compare answers to the same inputs"
        )
    gold = {e["idx"]: e.get("reference") for e in store.get_examples(dataset_a)}
    common = sorted(i for i in set(left) & set(right) if left[i].prompt == right[i].prompt)
    if not common:
        raise ValueError("the two answer sets share no example: pick answers to the same inputs")
    pairs = [PairItem(left[i].prompt, left[i].output, right[i].output, gold.get(i)) for i in common]
    return common, pairs


def launch_pairwise(
    store: Store,
    a: dict[str, Any],
    b: dict[str, Any],
    rubric: str,
    name: str = "pairwise",
    endpoint: TeacherSpec | None = None,
    use_reference: bool = False,
    *,
    actor: Actor,
) -> str:
    """Validate a head-to-head comparison and queue it; the endpoint defaults to the teacher.

    Raises:
        engine.access.AccessDenied: ``actor``'s role may not launch.
        engine.specs.SpecError: an invalid field (the message names it).
        ValueError: a side does not exist, or the sides share no example.
    """
    check(store, actor, Right.LAUNCH, "launch judges", name)
    try:
        left, right = JudgeTarget.model_validate(a), JudgeTarget.model_validate(b)
    except ValidationError as err:
        raise SpecError(format_validation_error(err, "pairwise sides")) from None
    if side_key(left) == side_key(right):
        raise SpecError("pairwise: a and b are the same answers; pick two different ones")
    _, pairs = collect_pairs(store, left, right)  # fail now, not in a worker
    if use_reference and not any(p.reference for p in pairs):
        raise ValueError("the dataset has no reference answers to show the judge; untick the reference")
    try:
        judge = JudgeSpec(
            name=name,
            endpoint=check_endpoint(endpoint or default_endpoint(store, left)),
            rubric=rubric,
            use_reference=use_reference,
            mode="pairwise",
        )
    except ValidationError as err:
        raise SpecError(format_validation_error(err, "judge")) from None
    spec = PairwiseJobSpec(judge=judge, a=left, b=right).model_dump(mode="json")
    exp_id = left.experiment_id or (store.get_run(left.run_id or "") or {}).get("experiment_id")
    job_id = store.enqueue(JOB_KIND, spec, experiment_id=exp_id)  # listed with A's experiment
    done(store, actor, "launch pairwise judge", job_id, judge=name, experiment=exp_id)
    return job_id


def main(ctx: JobContext) -> None:
    """Job entry point: judge every shared example in both orders and save the winners."""
    try:
        job = PairwiseJobSpec.model_validate(ctx.spec)
    except ValidationError as err:
        raise SpecError(format_validation_error(err, "pairwise job spec")) from None
    store, judge = ctx.store, job.judge
    idxs, pairs = collect_pairs(store, job.a, job.b)
    ctx.progress(0.02, f"{judge.name}: {len(pairs)} pairs, each asked in both orders", force=True)
    with endpoint_url(store.home / "judges" / ctx.job_id, judge.endpoint) as (url, scope):
        client = ChatClient(
            judge.endpoint,
            store.home / "llm_cache.db",
            base_url_override=url,
            cache_scope=scope,
            key_field=KEY_FIELD,
        )
        verdicts = judge_pairwise(client, judge, pairs)
    if all(v.winner == "error" for v in verdicts):
        raise RuntimeError(f"every judge call failed; first error: {verdicts[0].reason}")
    a, b = side_key(job.a), side_key(job.b)
    store.save_judge_verdicts(
        judge.name,
        [
            {
                "item_ref": pair_ref(a, b, i),
                "verdict": v.winner,
                "reason": v.reason,
                "raw": json.dumps({"consistent": v.consistent, "orders": [o.raw for o in v.orders]}),
            }
            for i, v in zip(idxs, verdicts, strict=True)
        ],
    )
    summary = score([v.winner for v in verdicts], [v.consistent for v in verdicts], seed=0, n_boot=1000)
    message = (
        f"{judge.name}: B wins {summary['b_wins']}, A wins {summary['a_wins']}, ties {summary['ties']} "
        f"of {len(verdicts)}; ${sum(v.cost_usd for v in verdicts):.4f}"
    )
    store.add_event("info", "judged", message, job_id=ctx.job_id)
    ctx.progress(1.0, message, force=True)


def score(winners: list[str], consistent: list[bool], seed: int = 0, n_boot: int = 1000) -> dict[str, Any]:
    """Win counts and B's score, (wins + ties / 2) / decided, with a 95% bootstrap interval.

    Unparsable and failed comparisons are counted apart and left out of the score.
    """
    valid = [w for w in winners if w in ("A", "B", "tie")]
    points = [1.0 if w == "B" else 0.5 if w == "tie" else 0.0 for w in valid]
    out: dict[str, Any] = {
        "n": len(winners),
        "a_wins": sum(w == "A" for w in valid),
        "b_wins": sum(w == "B" for w in valid),
        "ties": sum(w == "tie" for w in valid),
        "failed": len(winners) - len(valid),
        "inconsistent": sum(not c for c in consistent),
        "b_score": sum(points) / len(points) if points else None,
        "ci": None,
    }
    if points:
        rng = random.Random(seed)
        means = sorted(sum(rng.choices(points, k=len(points))) / len(points) for _ in range(n_boot))
        out["ci"] = (means[int(0.025 * (n_boot - 1))], means[int(0.975 * (n_boot - 1))])
    return out


def head_to_head(store: Store) -> list[dict[str, Any]]:
    """One row per (judge, A, B) comparison in the workspace, newest judges last."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for v in store.list_judge_verdicts(prefix=PAIR_PREFIX):
        parts = v["item_ref"].split(":")
        if len(parts) == 4:
            groups[(v["judge_name"], parts[1], parts[2])].append(v)
    rows = []
    for (judge, a, b), verdicts in sorted(groups.items()):
        consistent = [bool(json.loads(v["raw"] or "{}").get("consistent", True)) for v in verdicts]
        rows.append({"judge": judge, "a": a, "b": b, **score([v["verdict"] for v in verdicts], consistent)})
    return rows


def side_label(store: Store, key: str) -> str:
    """A side's name for people: the run's label, or the experiment's teacher answers."""
    if key.startswith("teacher."):
        exp = store.get_experiment(key.removeprefix("teacher."))
        return f"{exp['name'] if exp else key} · teacher answers"
    run = store.get_run(key)
    if run is None:
        return key
    return f"n={run['train_size']} seed {run['seed']} · {key}"


def head_to_head_frame(store: Store, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """:func:`head_to_head` rows as a table for people."""
    return [
        {
            "judge": r["judge"],
            "A": side_label(store, r["a"]),
            "B": side_label(store, r["b"]),
            "pairs": r["n"],
            "B wins": r["b_wins"],
            "ties": r["ties"],
            "A wins": r["a_wins"],
            "B score": r["b_score"],
            "95% CI": "—" if r["ci"] is None else f"[{r['ci'][0]:.2f}, {r['ci'][1]:.2f}]",
            "orders disagree": r["inconsistent"],
            "failed": r["failed"],
        }
        for r in rows
    ]


DEFAULT_RUBRIC = (
    "The better answer does exactly what the task asks and is correct: every stated fact, "
    "field and value is right, nothing required is missing, and nothing is added."
)
"""Rubric for a student-against-teacher comparison when the user gives none."""


def teacher_side(experiment_id: str) -> dict[str, Any]:
    """The judge target of an experiment's teacher answers."""
    return {"experiment_id": experiment_id, "teacher": True}


def versus_teacher(store: Store, experiment_id: str, judge: str | None = None) -> list[dict[str, Any]]:
    """Each run of the experiment judged against its teacher: the student's score (0.5 = as good).

    Rows are ``run_id``, ``train_size``, ``seed``, ``judge``, ``pairs``, ``student_score``
    (student wins + ties / 2, over decided pairs) and its 95% ``ci``, by train size.
    """
    teacher = side_key(JudgeTarget.model_validate(teacher_side(experiment_id)))
    runs = {r["id"]: r for r in store.list_runs(experiment_id)}
    rows = []
    for r in head_to_head(store):
        if r["a"] in runs and r["b"] == teacher and (judge is None or r["judge"] == judge):
            run = runs[r["a"]]
            score_b, ci = r["b_score"], r["ci"]
            rows.append(
                {
                    "run_id": run["id"],
                    "train_size": run["train_size"],
                    "seed": run["seed"],
                    "judge": r["judge"],
                    "pairs": r["n"],
                    "student_score": None if score_b is None else 1.0 - score_b,
                    "ci": None if ci is None else (1.0 - ci[1], 1.0 - ci[0]),
                }
            )
    return sorted(rows, key=lambda row: (row["train_size"] or 0, row["seed"] or 0, row["judge"]))


def versus_teacher_spec(spec: Any, experiment_id: str, run_id: str) -> dict[str, Any]:
    """The job spec comparing run ``run_id`` with its experiment's teacher (queued at launch,
    before the run exists: its pairs are collected when the job runs).

    Raises:
        ValueError: the teacher cannot judge (a local model).
    """
    judge = JudgeSpec(
        name="vs-teacher",
        endpoint=check_endpoint(spec.teacher),
        rubric=DEFAULT_RUBRIC,
        mode="pairwise",
    )
    job = PairwiseJobSpec(
        judge=judge, a=JudgeTarget(run_id=run_id), b=JudgeTarget(**teacher_side(experiment_id))
    )
    return job.model_dump(mode="json")


def launch_versus_teacher(
    store: Store,
    experiment_id: str,
    rubric: str = DEFAULT_RUBRIC,
    name: str = "vs-teacher",
    *,
    actor: Actor,
) -> list[str]:
    """Queue a head-to-head against the teacher for every finished run not yet judged by ``name``.

    Returns:
        The job ids (empty when every run already has its comparison).

    Raises:
        engine.access.AccessDenied: ``actor``'s role may not launch.
        ValueError: the experiment has no finished run, or no teacher answers.
    """
    check(store, actor, Right.LAUNCH, "launch judges", experiment_id)
    judged = {r["run_id"] for r in versus_teacher(store, experiment_id, name)}
    runs = [r for r in store.list_runs(experiment_id) if r["status"] == "succeeded"]
    if not runs:
        raise ValueError("no finished run to compare with the teacher yet")
    queued = {
        j["spec"]["a"].get("run_id")
        for j in store.list_jobs(statuses=("queued", "running"))
        if j["kind"] == JOB_KIND and j["spec"]["judge"]["name"] == name
    }
    return [
        launch_pairwise(store, {"run_id": r["id"]}, teacher_side(experiment_id), rubric, name, actor=actor)
        for r in runs
        if r["id"] not in judged and r["id"] not in queued
    ]
