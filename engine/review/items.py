"""Error review: one student answer at a time, next to everything known about it.

A review item is one per-example output of a run (``run:<run_id>:<idx>``) joined with the
teacher's answer to the same prompt, the base model's answer when the experiment has a
``base`` run, the workspace's rules (``<home>/rules.yaml``), the judges' stored verdicts and
the SMEs' current labels. The teacher's own answers are items too
(``teacher:<dataset_id>:<teacher_key>:<idx>``, scored against the gold answer): an SME's
reject there keeps the answer out of training (``curation.sme``). Everything here reads the
store; the only write is through :meth:`engine.store.Store.add_annotation`, which appends, so
two people labelling at once never overwrite each other.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from engine.review.diff import diff_html, field_diff, token_diff  # noqa: F401  (the page's diff)
from engine.scoring.label_functions import RuleError, RuleResult
from engine.scoring.rules import Rule, apply_rules, load_rules
from engine.specs import ExperimentSpec, TaskSpec
from engine.store import Store

RULES_FILE = "rules.yaml"
"""The workspace's rules, ``<home>/rules.yaml``, applied to every answer under review."""
BASE_VARIANT = "base"
"""Runs with this variant hold the untrained base model's answers (shown when present)."""


# ------------------------------------------------------------------------ item refs
def run_ref(run_id: str, idx: int) -> str:
    """The item ref of a student answer: ``run:<run_id>:<idx>``."""
    return f"run:{run_id}:{idx}"


def run_prefix(run_id: str) -> str:
    """The prefix every item ref of one run starts with."""
    return f"run:{run_id}:"


def teacher_ref(dataset_id: str, teacher_key: str, idx: int) -> str:
    """The item ref of a teacher answer: ``teacher:<dataset_id>:<teacher_key>:<idx>``."""
    return f"teacher:{dataset_id}:{teacher_key}:{idx}"


def teacher_prefix(dataset_id: str, teacher_key: str) -> str:
    """The prefix every item ref of one teacher's answers on a dataset starts with; also the
    id of that answer set on the Review page (see :func:`review_sources`)."""
    return f"teacher:{dataset_id}:{teacher_key}:"


def source_of(ref: str) -> str | None:
    """The answer set ``ref`` belongs to: its run id, or its teacher prefix; None if malformed."""
    where = parse_ref(ref)
    if where is None:
        return None
    if where["kind"] == "run":
        return str(where["run_id"])
    return teacher_prefix(where["dataset_id"], where["teacher_key"])


def source_prefix(source: str) -> str:
    """The prefix of every item ref of an answer set (a run id, or a teacher prefix)."""
    return source if source.startswith("teacher:") else run_prefix(source)


def parse_ref(ref: str) -> dict[str, Any] | None:
    """``{"kind": "run", "run_id", "idx"}`` or ``{"kind": "teacher", ...}``; None if malformed."""
    parts = ref.split(":")
    try:
        if parts[0] == "run" and len(parts) == 3:
            return {"kind": "run", "run_id": parts[1], "idx": int(parts[2])}
        if parts[0] == "teacher" and len(parts) == 4:
            return {"kind": "teacher", "dataset_id": parts[1], "teacher_key": parts[2], "idx": int(parts[3])}
    except ValueError:
        return None
    return None


# --------------------------------------------------------------------------- items
def sme_consensus(labels: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The SMEs' verdict on one item from each annotator's current label.

    The majority label wins; a tie counts as ``reject``, because accepting a bad answer is the
    costly mistake. The returned row is the latest label that agrees with the verdict (its
    category and note explain it). None when nobody labelled the item.
    """
    if not labels:
        return None
    votes = Counter(a["label"] for a in labels)
    verdict = "accept" if votes["accept"] > votes["reject"] else "reject"
    return max((a for a in labels if a["label"] == verdict), key=lambda a: a["id"])


@dataclass
class ReviewItem:
    """One student answer with everything the Review page shows about it."""

    ref: str
    run_id: str | None
    """The run that answered; None for a teacher's answer."""
    idx: int
    prompt: str
    student: str
    """The answer under review: the student's, or the teacher's for a teacher item."""
    reference: str | None = None
    teacher: str | None = None
    base: str | None = None
    scores: dict[str, float] = field(default_factory=dict)
    rules: list[RuleResult] = field(default_factory=list)
    judges: dict[str, dict[str, Any]] = field(default_factory=dict)
    """judge name -> stored verdict row (``verdict``, ``reason``, ``raw``)."""
    labels: list[dict[str, Any]] = field(default_factory=list)
    """Each annotator's current label (latest row per person, i.e. per ``annotator_sub``)."""

    @property
    def answer_of(self) -> str:
        """Whose answer is under review: ``student`` or ``teacher``."""
        return "teacher" if self.run_id is None else "student"

    @property
    def rejected_rules(self) -> list[str]:
        """Names of the rules that rejected the answer."""
        return [r.rule for r in self.rules if not r.passed]

    @property
    def failed(self) -> bool:
        """Not an exact match of the reference, or rejected by a rule."""
        em = self.scores.get("exact_match")
        return (em is not None and em < 1) or bool(self.rejected_rules)

    def label_of(self, subject: str) -> dict[str, Any] | None:
        """The current label of the person with this subject (``Actor.subject``), if any."""
        return next((a for a in self.labels if a["annotator_sub"] == subject), None)

    @property
    def sme(self) -> dict[str, Any] | None:
        """The consensus SME label (see :func:`sme_consensus`)."""
        return sme_consensus(self.labels)

    def disagrees(self, judge: str | None = None) -> bool:
        """SMEs and ``judge`` (any judge when None) differ on accept vs not accept."""
        sme = self.sme
        if sme is None:
            return False
        names = [judge] if judge else list(self.judges)
        return any(
            n in self.judges and (self.judges[n]["verdict"] == "accept") != (sme["label"] == "accept")
            for n in names
        )


def load_workspace_rules(home: Path) -> tuple[list[Rule], str | None]:
    """The rules of ``<home>/rules.yaml`` (none when absent) and an error message if refused."""
    path = Path(home) / RULES_FILE
    if not path.is_file():
        return [], None
    try:
        return list(load_rules(path, workspace=Path(home))), None
    except RuleError as err:
        return [], str(err)


def reviewable_runs(store: Store) -> list[dict[str, Any]]:
    """Runs that saved per-example outputs, newest first, each with ``label``, ``n_outputs`` and
    ``n_labelled`` (answers someone has labelled: labels stay with the run they were given on)."""
    with store.read() as conn:  # one grouped count instead of loading every run's outputs
        counts = dict(conn.execute("SELECT run_id, COUNT(*) FROM outputs GROUP BY run_id").fetchall())
        labelled_refs = [
            row[0]
            for row in conn.execute("SELECT DISTINCT item_ref FROM annotations WHERE item_ref LIKE 'run:%'")
        ]
    labelled: Counter[str] = Counter()
    for ref in labelled_refs:
        if (where := parse_ref(ref)) and where["kind"] == "run":
            labelled[where["run_id"]] += 1
    names = {e["id"]: e["name"] for e in store.list_experiments()}
    runs = [r for r in store.list_runs() if counts.get(r["id"])]
    runs.sort(key=lambda r: (r["created_at"], r["id"]), reverse=True)
    for r in runs:
        exp = names.get(r["experiment_id"], "no experiment")
        what = "base model" if r["variant"] == BASE_VARIANT else f"n={r['train_size']} seed {r['seed']}"
        r["n_outputs"] = counts[r["id"]]
        r["n_labelled"] = labelled[r["id"]]
        r["label"] = f"{exp} · {what} · {r['id']}"
    return runs


def experiment_teachers(spec: ExperimentSpec) -> dict[str, str]:
    """The experiment's teachers, ``{teacher_key: label}`` in the order of ``ablation.vary``.

    One teacher unless the experiment varies a teacher setting; then each label names the value.
    """
    resolved = [cell for _, cell in spec.variant_specs()]
    if len({cell.teacher_key() for cell in resolved}) == 1:
        return {spec.teacher_key(): spec.teacher.identity()}
    path = str(spec.vary_path())
    out: dict[str, str] = {}
    for value, cell in zip(spec.ablation.vary[path], resolved, strict=True):
        out.setdefault(cell.teacher_key(), f"{cell.teacher.identity()} · {path}={value}")
    return out


def teacher_answer_sets(store: Store) -> list[dict[str, Any]]:
    """The teachers' answers that can be reviewed, newest experiment first: one set per dataset
    and teacher (experiments that share both share the set), each with ``id`` (its
    :func:`teacher_prefix`), ``label``, ``n_outputs`` and ``n_labelled``."""
    with store.read() as conn:
        counts = {
            teacher_prefix(ds, key): n
            for ds, key, n in conn.execute(
                "SELECT dataset_id, teacher_key, COUNT(*) FROM teacher_responses"
                " WHERE output IS NOT NULL GROUP BY dataset_id, teacher_key"
            )
        }
        labelled_refs = [
            row[0]
            for row in conn.execute(
                "SELECT DISTINCT item_ref FROM annotations WHERE item_ref LIKE 'teacher:%'"
            )
        ]
    labelled = Counter(source_of(ref) for ref in labelled_refs)
    sets: dict[str, dict[str, Any]] = {}
    for exp in store.list_experiments():
        if not exp.get("dataset_id"):
            continue
        try:
            teachers = experiment_teachers(ExperimentSpec.model_validate(exp["spec"]))
        except ValidationError:
            continue
        for key, teacher in teachers.items():
            prefix = teacher_prefix(exp["dataset_id"], key)
            if counts.get(prefix) and prefix not in sets:
                sets[prefix] = {
                    "id": prefix,
                    "label": f"{exp['name']} · teacher's answers ({teacher})",
                    "n_outputs": counts[prefix],
                    "n_labelled": labelled[prefix],
                }
    return list(sets.values())


def review_sources(store: Store) -> list[dict[str, Any]]:
    """Everything the Review page can open: runs (newest first, see :func:`reviewable_runs`),
    then the teachers' answers (:func:`teacher_answer_sets`); each has ``id`` (a run id or a
    teacher prefix, for :func:`build_items`), ``label``, ``n_outputs`` and ``n_labelled``."""
    return [*reviewable_runs(store), *teacher_answer_sets(store)]


def _teacher_answers(store: Store, run: dict[str, Any]) -> dict[int, str | None]:
    exp = store.get_experiment(run["experiment_id"]) if run.get("experiment_id") else None
    if not exp or not exp.get("dataset_id"):
        return {}
    try:
        key = ExperimentSpec.model_validate(exp["spec"]).teacher_key()
    except ValidationError:  # a spec from an older Sensei: review works, without the teacher
        return {}
    return {i: r["output"] for i, r in store.get_teacher_responses(exp["dataset_id"], key).items()}


def _base_answers(store: Store, run: dict[str, Any]) -> dict[int, str]:
    if not run.get("experiment_id") or run["variant"] == BASE_VARIANT:
        return {}
    for other in store.list_runs(run["experiment_id"]):
        if other["variant"] == BASE_VARIANT:
            return {o["idx"]: o["output"] for o in store.list_outputs(other["id"])}
    return {}


def _verdicts_and_labels(
    store: Store, prefix: str
) -> tuple[dict[str, dict[str, dict[str, Any]]], dict[str, list[dict[str, Any]]]]:
    """Judge verdicts (by item ref, then judge) and SME labels (by item ref) under ``prefix``."""
    verdicts: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for v in store.list_judge_verdicts(prefix=prefix):
        verdicts[v["item_ref"]][v["judge_name"]] = v
    labels: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for a in store.annotations(prefix=prefix):
        labels[a["item_ref"]].append(a)
    return verdicts, labels


def build_items(store: Store, run_id: str, rules: Sequence[Rule] = ()) -> list[ReviewItem]:
    """Every output of ``run_id`` as a review item, in example order.

    ``run_id`` may also be a teacher answer set (a :func:`teacher_prefix`): then every answer of
    that teacher, see :func:`build_teacher_items`.
    """
    if run_id.startswith("teacher:"):
        where = parse_ref(run_id + "0")
        if where is None:
            return []
        return build_teacher_items(store, where["dataset_id"], where["teacher_key"], rules)
    run = store.get_run(run_id)
    if run is None:
        return []
    teacher, base = _teacher_answers(store, run), _base_answers(store, run)
    verdicts, labels = _verdicts_and_labels(store, run_prefix(run_id))
    items = []
    for o in store.list_outputs(run_id):
        ref = run_ref(run_id, o["idx"])
        items.append(
            ReviewItem(
                ref=ref,
                run_id=run_id,
                idx=o["idx"],
                prompt=o["prompt"],
                student=o["output"],
                reference=o["reference"],
                teacher=teacher.get(o["idx"]),
                base=base.get(o["idx"]),
                scores=dict(o.get("scores") or {}),
                rules=apply_rules(rules, o["output"]),
                judges=verdicts.get(ref, {}),
                labels=labels.get(ref, []),
            )
        )
    return items


def build_teacher_items(
    store: Store, dataset_id: str, teacher_key: str, rules: Sequence[Rule] = ()
) -> list[ReviewItem]:
    """Every answer of one teacher on a dataset as a review item, in example order.

    The answer is scored against the example's gold answer with the dataset's task metrics (so
    *failed* means the teacher and the gold answer differ); no score without a gold answer.
    """
    from engine.scoring.metrics import score

    dataset = store.get_dataset(dataset_id)
    if dataset is None:
        return []
    task = TaskSpec.model_validate(dataset["task"])
    prefix = teacher_prefix(dataset_id, teacher_key)
    answers = store.get_teacher_responses(dataset_id, teacher_key)
    verdicts, labels = _verdicts_and_labels(store, prefix)
    items = []
    for ex in store.get_examples(dataset_id):
        answer = (answers.get(ex["idx"]) or {}).get("output")
        if answer is None:
            continue
        ref = teacher_ref(dataset_id, teacher_key, ex["idx"])
        gold = ex["reference"] or None
        items.append(
            ReviewItem(
                ref=ref,
                run_id=None,
                idx=ex["idx"],
                prompt=ex["prompt"],
                student=answer,
                reference=gold,
                scores=score(task, answer, gold) if gold else {},
                rules=apply_rules(rules, answer),
                judges=verdicts.get(ref, {}),
                labels=labels.get(ref, []),
            )
        )
    return items


# ------------------------------------------------------------------------- filters
@dataclass(frozen=True)
class ReviewFilter:
    """Which items to show; every criterion set must hold (AND)."""

    failed_only: bool = False
    """Only answers that are not an exact match or that a rule rejected."""
    rule: str | None = None
    """Only answers this rule rejected."""
    judge: str | None = None
    """The judge ``verdict`` and ``disagreement`` look at (None: any judge)."""
    verdict: str | None = None
    """Only answers the judge gave this verdict (accept, reject, unparsable, error)."""
    disagreement: bool = False
    """Only answers where the SMEs' label and the judge's verdict differ."""
    unlabelled_by: str | None = None
    """Only answers the person with this subject (``Actor.subject``) has not labelled yet."""


def filter_items(items: Iterable[ReviewItem], flt: ReviewFilter) -> list[ReviewItem]:
    """The items that pass ``flt``, in their original order."""
    out = []
    for it in items:
        judges = [flt.judge] if flt.judge else list(it.judges)
        if flt.failed_only and not it.failed:
            continue
        if flt.rule and flt.rule not in it.rejected_rules:
            continue
        if flt.verdict and not any(it.judges.get(j, {}).get("verdict") == flt.verdict for j in judges):
            continue
        if flt.disagreement and not it.disagrees(flt.judge):
            continue
        if flt.unlabelled_by and it.label_of(flt.unlabelled_by):
            continue
        out.append(it)
    return out


# -------------------------------------------------------------------------- export
def annotations_jsonl(
    store: Store, prefix: str | None = None, history: bool = False, items: Iterable[ReviewItem] = ()
) -> str:
    """SME labels as JSON Lines: one label per line (each annotator's current one, or all).

    Lines carry the item ref, annotator (display name and subject), label, category, note and
    time; with ``items``, the
    prompt, answer, reference and teacher answer of the item too. Nothing else (no specs, no
    endpoints), so the file is safe to share.
    """
    by_ref = {it.ref: it for it in items}
    lines = []
    for a in store.annotations(prefix=prefix, current_only=not history):
        keys = ("item_ref", "annotator", "annotator_sub", "label", "category", "note", "ts")
        row: dict[str, Any] = {k: a[k] for k in keys}
        row.update({k: v for k, v in (parse_ref(a["item_ref"]) or {}).items() if k != "kind"})
        if it := by_ref.get(a["item_ref"]):
            row.update(prompt=it.prompt, output=it.student, reference=it.reference, teacher=it.teacher)
        lines.append(json.dumps(row, ensure_ascii=False))
    return "".join(line + "\n" for line in lines)
