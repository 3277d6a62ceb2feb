"""Where the teacher's answers and the gold (reference) answers disagree, on the training examples.

A ``gold`` run learns from the dataset's references, a ``sft`` run from the teacher's answers to
the same prompts; where the two curves part, these examples are why. Each training example with
both answers is scored with the task's own metrics (:func:`engine.scoring.metrics.score`, the
teacher's answer against the reference): an answer that is not an exact match disagrees, and
how much is the task's curve metric (field accuracy for JSON, with the fields that differ;
exact match for labels; fuzzy similarity for text). Rows come most different first, each with
its Review item ref (:func:`engine.review.items.teacher_ref`), where an SME's reject keeps the
answer out of training (``curation.sme``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from pydantic import ValidationError

from engine.review.items import experiment_teachers, teacher_ref
from engine.scoring.metrics import field_matches, parse_json_object, score
from engine.specs import ExperimentSpec, TaskSpec
from engine.store import Store
from engine.words import plural

AGREEMENT_METRIC = {"json": "field_accuracy", "label": "exact_match", "text": "fuzzy"}
"""Per answer kind, the metric that says how far the teacher's answer is from the gold one."""


@dataclass(frozen=True)
class Disagreement:
    """One training example whose teacher answer is not an exact match of its gold answer.

    Attributes:
        idx: The example index.
        ref: Its Review item ref (the teacher's answer).
        input: The example's input (the prompt's variable part).
        gold: The reference answer.
        teacher: The teacher's answer.
        agreement: The task's agreement metric (:data:`AGREEMENT_METRIC`) of the teacher's answer
            against the gold one, in ``[0, 1]``; 0 for an answer that does not parse.
        similarity: Fuzzy similarity of the two texts (orders rows of equal agreement).
        fields: JSON fields whose values differ (every key either answer has), in gold order.
        how: How they differ, in words: ``fields: urgency``, ``not a JSON object``, ...
    """

    idx: int
    ref: str
    input: str
    gold: str
    teacher: str
    agreement: float
    similarity: float
    fields: tuple[str, ...] = ()
    how: str = ""


@dataclass
class GoldDisagreements:
    """The training examples of one experiment's teacher whose answer differs from the gold one.

    Attributes:
        experiment_id: The experiment.
        teacher_key: Which teacher's answers (an experiment that varies its teacher has several).
        teachers: Every teacher of the experiment, ``{teacher_key: label}``.
        compared: Training examples with both a gold and a teacher answer.
        rows: The disagreeing ones, most different first.
        no_gold: Training examples without a reference answer.
        no_teacher: Training examples with a reference but no teacher answer (yet).
        reason: Why nothing can be compared (no dataset yet, a gold-only experiment), or None.
    """

    experiment_id: str
    teacher_key: str | None = None
    teachers: dict[str, str] = field(default_factory=dict)
    compared: int = 0
    rows: list[Disagreement] = field(default_factory=list)
    no_gold: int = 0
    no_teacher: int = 0
    reason: str | None = None

    @property
    def by_field(self) -> dict[str, int]:
        """JSON field -> disagreeing examples where it differs, most frequent first."""
        return dict(Counter(f for r in self.rows for f in r.fields).most_common())

    def summary(self) -> str:
        """One sentence: how many disagree, out of how many, and the fields that differ most."""
        if self.reason:
            return self.reason
        if not self.compared:
            return "No training example has both a gold answer and a teacher answer yet."
        n = len(self.rows)
        line = (
            f"The teacher's answer differs from the gold answer on {n:,} of "
            f"{plural(self.compared, 'training example')} ({n / self.compared:.0%})"
        )
        if fields := self.by_field:
            top = ", ".join(f"{name} ({k:,})" for name, k in list(fields.items())[:4])
            line += f"; fields that differ most: {top}"
        skipped = [
            f"{k:,} without a {what} answer"
            for k, what in ((self.no_gold, "gold"), (self.no_teacher, "teacher"))
            if k
        ]
        return line + (f"; left out: {', '.join(skipped)}" if skipped else "") + "."


def _how(task: TaskSpec, gold: str, teacher: str) -> tuple[tuple[str, ...], str]:
    """The differing fields and a phrase saying how two answers differ."""
    if task.output_kind == "json":
        matches = field_matches(task, teacher, gold, every_key=True)
        if matches is not None:
            fields = tuple(name for name, same in matches.items() if not same)
            return fields, ("fields: " + ", ".join(fields)) if fields else "formatting"
        if parse_json_object(gold) is not None:
            return (), "not a JSON object"
    if task.output_kind == "label":
        return (), "another label"
    return (), "other text"


def gold_disagreements(store: Store, experiment_id: str, teacher_key: str | None = None) -> GoldDisagreements:
    """The experiment's training examples where the teacher's and the gold answer differ.

    Args:
        store: The workspace store.
        experiment_id: The experiment (its dataset, task and teacher).
        teacher_key: Which teacher, for an experiment that varies one (default: the first).

    Returns:
        The disagreements, most different first, with the counts they are out of. Nothing is
        compared (``reason`` says why) before the teacher job has built the dataset, or for an
        experiment that asks no teacher (every value ``gold``).

    Raises:
        KeyError: no such experiment, or ``teacher_key`` is not one of its teachers.
    """
    row = store.get_experiment(experiment_id)
    if row is None:
        raise KeyError(f"no experiment {experiment_id}")
    out = GoldDisagreements(experiment_id)
    try:
        spec = ExperimentSpec.model_validate(row["spec"])
    except ValidationError:
        out.reason = "This experiment's spec is from an older Sensei: its teacher cannot be identified."
        return out
    out.teachers = experiment_teachers(spec)
    if teacher_key is not None and teacher_key not in out.teachers:
        raise KeyError(f"experiment {experiment_id} has no teacher {teacher_key}")
    out.teacher_key = teacher_key or next(iter(out.teachers))
    if not spec.needs_teacher_answers():
        out.reason = "Every run of this experiment trains on the gold answers: no teacher was asked."
        return out
    dataset_id = row.get("dataset_id")
    if not dataset_id:
        out.reason = "The teacher job has not built this experiment's dataset yet."
        return out
    task = spec.task
    metric = AGREEMENT_METRIC[task.output_kind]
    answers = store.get_teacher_responses(dataset_id, out.teacher_key)
    for ex in store.get_examples(dataset_id, "train"):
        gold = (ex["reference"] or "").strip()
        if not gold:
            out.no_gold += 1
            continue
        teacher = ((answers.get(ex["idx"]) or {}).get("output") or "").strip()
        if not teacher:
            out.no_teacher += 1
            continue
        out.compared += 1
        scores = score(task, teacher, gold)
        if scores["exact_match"] >= 1.0:
            continue
        fields, how = _how(task, gold, teacher)
        out.rows.append(
            Disagreement(
                idx=ex["idx"],
                ref=teacher_ref(dataset_id, out.teacher_key, ex["idx"]),
                input=ex["input"],
                gold=gold,
                teacher=teacher,
                agreement=scores[metric],
                similarity=scores["fuzzy"],
                fields=fields,
                how=how,
            )
        )
    out.rows.sort(key=lambda r: (r.agreement, r.similarity, r.idx))
    return out
