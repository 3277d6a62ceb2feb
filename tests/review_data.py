"""A reviewable workspace written straight through Store methods (no teacher, no training).

One finished demo experiment with one run: 12 test answers on the demo task, some right, some
with a wrong field, extra prose or broken JSON; the teacher's answers; a ``rules.yaml``; two
judges' verdicts; and a few SME labels. Used by the engine, AppTest and browser tests.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine import ablation
from engine.demo.task import generate_examples
from engine.review import items as review
from engine.scoring.metrics import score
from engine.specs import AblationSpec, ExperimentSpec, demo_spec
from engine.store import Store
from tests.actors import ADMIN, person

RULES_YAML = """\
- {kind: regex_must_match, name: starts_with_brace, pattern: '^\\s*\\{'}
- {kind: required_fields, name: has_fields, fields: [intent, product, order_id, urgency]}
"""
N = 12
# What goes wrong with the student's answer at each test position (others are right).
MISTAKES = {1: "wrong_field", 4: "prose", 6: "broken", 9: "wrong_field", 10: "prose"}


@dataclass
class Populated:
    """Ids of what :func:`populate` wrote."""

    experiment_id: str
    dataset_id: str
    run_id: str
    spec: ExperimentSpec

    def ref(self, i: int) -> str:
        """Item ref of the i-th test answer."""
        return review.run_ref(self.run_id, 100 + i)


def _student(reference: str, mistake: str | None) -> str:
    if mistake == "wrong_field":
        for a, b in (('"high"', '"low"'), ('"low"', '"high"'), ('"medium"', '"high"')):
            if a in reference:
                return reference.replace(a, b, 1)
    if mistake == "prose":
        return f"Sure! Here is the JSON you asked for: {reference}"
    if mistake == "broken":
        return reference[: len(reference) // 2]
    return reference


def populate(store: Store, labels: bool = True, judges: bool = True) -> Populated:
    """Write the workspace described in the module docstring; returns its ids."""
    spec = demo_spec("fast").model_copy(
        update={"ablation": AblationSpec(train_sizes=[16], seeds=[0], zero_shot=False)}
    )
    exp_id = ablation.launch_experiment(store, spec, actor=ADMIN)
    examples = generate_examples(N, seed=3)
    rows = [
        {
            "idx": 100 + i,
            "split": "test",
            "input": ex["input"],
            "prompt": spec.task.prompt_template.format(**ex),
            "reference": ex["reference"],
            "meta": ex["meta"],
        }
        for i, ex in enumerate(examples)
    ]
    ds_id = store.save_dataset("demo", f"review-{exp_id}", spec.task.model_dump(), rows)
    store.set_experiment_dataset(exp_id, ds_id)
    teacher_out = {r["idx"]: _student(r["reference"], "prose" if r["idx"] == 104 else None) for r in rows}
    store.save_teacher_responses(
        ds_id,
        spec.teacher_key(),
        [{"idx": i, "request_hash": f"h{i}", "output": o} for i, o in teacher_out.items()],
    )
    for job in store.list_jobs(experiment_id=exp_id):
        store.mark_started(job["id"], os.getpid(), None)
        store.finish_job(job["id"], "succeeded", exit_code=0, message="done")
    (run,) = store.list_runs(exp_id)
    outputs = []
    for i, r in enumerate(rows):
        out = _student(r["reference"], MISTAKES.get(i))
        outputs.append(
            {
                "idx": r["idx"],
                "prompt": r["prompt"],
                "output": out,
                "reference": r["reference"],
                "scores": score(spec.task, out, r["reference"]),
            }
        )
    store.save_outputs(run["id"], outputs)
    store.set_run_metrics(run["id"], {"field_accuracy": 0.8, "exact_match": 7 / 12})
    (Path(store.home) / review.RULES_FILE).write_text(RULES_YAML)
    pop = Populated(exp_id, ds_id, run["id"], spec)
    if judges:
        # "strict" rejects every mistake but one; "lenient" accepts prose and, once, can't be parsed.
        strict = {
            i: "reject" if m and i != 9 else "accept" for i, m in ((i, MISTAKES.get(i)) for i in range(N))
        }
        lenient = {
            i: "reject" if MISTAKES.get(i) in ("wrong_field", "broken") else "accept" for i in range(N)
        }
        lenient[2] = "unparsable"
        for name, verdicts in (("strict", strict), ("lenient", lenient)):
            store.save_judge_verdicts(
                name,
                [
                    {
                        "item_ref": pop.ref(i),
                        "verdict": v,
                        "reason": f"{name} says {v} <b>#{i}</b>",
                        "raw": "{}",
                    }
                    for i, v in verdicts.items()
                ],
            )
    if labels:
        for i in range(N):  # ada labels everything; bob a few, disagreeing once
            mistake = MISTAKES.get(i)
            category = {
                "wrong_field": "wrong field value",
                "prose": "extra prose",
                "broken": "invalid format",
            }
            store.add_annotation(
                pop.ref(i),
                "reject" if mistake else "accept",
                category.get(mistake or ""),
                f"checked #{i}",
                actor=person("ada"),
            )
        store.add_annotation(pop.ref(0), "accept", actor=person("bob"))
        store.add_annotation(pop.ref(4), "accept", note="prose is fine by me", actor=person("bob"))
    return pop


def write_labels(home: str, annotator: str, n: int, start: Any = None, items: int = 10) -> None:
    """Append ``n`` labels as ``annotator`` (item ``i % items``, label alternating), once every
    writer has reached the ``start`` barrier (threading's or multiprocessing's): a concurrency
    worker, importable from a spawned process. A barrier, not a wall-clock start: a spawned
    process on a loaded machine can take longer to import than any fixed head start."""
    store = Store(home)
    if start is not None:
        start.wait(timeout=120)
    for i in range(n):
        store.add_annotation(
            f"run:r:{i % items}", "accept" if i % 2 else "reject", note=str(i), actor=person(annotator)
        )
