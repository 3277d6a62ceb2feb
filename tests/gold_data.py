"""An experiment comparing ``gold`` and ``sft`` whose teacher disagrees with the gold answers on
a few planted training examples, written straight through Store methods (no teacher, no training).

20 demo tickets: 16 train (idx 0-15), 4 test (idx 16-19). The teacher's answer is the reference
except:

* #2: prose around the JSON (not a JSON object);
* #5: product and urgency wrong;
* #7: urgency wrong;
* #9: urgency wrong and an extra key ``note``;
* #11: the reference's fields in another order and spacing (the same answer);
* #13: no teacher answer; #14: no gold answer (blank reference);
* #17: a wrong field on the *test* split (not a training example, never listed).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from engine import ablation
from engine.demo.task import generate_examples
from engine.review.items import teacher_ref
from engine.specs import ExperimentSpec, demo_spec, parse_spec
from engine.store import Store
from tests.actors import ADMIN

N_TRAIN, N_TEST = 16, 4
DIFFERENT = {2, 5, 7, 9}
"""Training examples whose teacher answer differs from the gold one."""


@dataclass
class GoldCase:
    """Ids of what :func:`gold_experiment` wrote."""

    experiment_id: str
    dataset_id: str
    spec: ExperimentSpec

    def ref(self, idx: int) -> str:
        """Review item ref of the teacher's answer to example ``idx``."""
        return teacher_ref(self.dataset_id, self.spec.teacher_key(), idx)


def _swap(obj: dict[str, Any], key: str) -> None:
    other = {"urgency": ("low", "high"), "product": ("phone", "laptop")}[key]
    obj[key] = other[1] if obj[key] == other[0] else other[0]


def _teacher(idx: int, reference: str) -> str | None:
    obj = json.loads(reference)
    if idx == 2:
        return f"Sure! Here is the ticket: {reference}"
    if idx in (5, 7, 9, 17):
        _swap(obj, "urgency")
        if idx == 5:
            _swap(obj, "product")
        if idx == 9:
            obj["note"] = "customer sounds upset"
        return json.dumps(obj)
    if idx == 11:
        return json.dumps(dict(reversed(list(obj.items()))), indent=1)
    if idx == 13:
        return None
    return reference


def gold_experiment(store: Store, vary: dict[str, list[Any]] | None = None) -> GoldCase:
    """Write the experiment described in the module docstring (``student.recipe: [gold, sft]``
    unless ``vary`` says otherwise); its jobs are marked succeeded, its runs have no scores."""
    data = demo_spec("fast").model_dump(mode="json")
    data["ablation"].update(train_sizes=[8, 12], seeds=[0], zero_shot=False)
    data["ablation"]["vary"] = vary if vary is not None else {"student.recipe": ["gold", "sft"]}
    spec = parse_spec(data)
    exp_id = ablation.launch_experiment(store, spec, actor=ADMIN)
    rows, answers = [], []
    for i, ex in enumerate(generate_examples(N_TRAIN + N_TEST, seed=11)):
        answers.append((i, _teacher(i, ex["reference"])))
        rows.append(
            {
                "idx": i,
                "split": "train" if i < N_TRAIN else "test",
                "input": ex["input"],
                "prompt": spec.task.prompt_template.format(**ex),
                "reference": "" if i == 14 else ex["reference"],
                "meta": ex["meta"],
            }
        )
    ds_id = store.save_dataset("demo", f"gold-{exp_id}", spec.task.model_dump(), rows)
    store.set_experiment_dataset(exp_id, ds_id)
    store.save_teacher_responses(
        ds_id,
        spec.teacher_key(),
        [{"idx": i, "request_hash": f"h{i}", "output": out, "valid": True} for i, out in answers if out],
    )
    for job in store.list_jobs(experiment_id=exp_id):
        if job["kind"] == "teacher":
            store.mark_started(job["id"], os.getpid(), None)
            store.finish_job(job["id"], "succeeded", exit_code=0, message="done")
    return GoldCase(exp_id, ds_id, spec)
