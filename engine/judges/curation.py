"""Curation: which teacher answers are good enough to train on.

Three sources of evidence, set by ``ExperimentSpec.curation`` (:class:`engine.specs.CurationSpec`):

* the workspace's rules (``<home>/rules.yaml``): any rule that rejects an answer drops it;
* one judge's stored verdicts on the teacher answers (item refs from
  :func:`engine.review.items.teacher_ref`): anything but ``accept`` drops it, and a missing verdict
  keeps or drops it per ``judge_missing``;
* the SMEs' labels on the teacher answers: where their consensus
  (:func:`engine.review.items.sme_consensus`) exists it overrides rules and judge, because a person
  who read the answer knows better than either.

:func:`curate` reads the store and returns one :class:`Decision` per teacher answer; the train
job (:func:`engine.training.pools.training_pool`) keeps only the accepted ones, and the DPO stage
uses :func:`dpo_rule_fn` so a student answer a rule rejects counts as failing.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.review.items import load_workspace_rules, sme_consensus, teacher_ref
from engine.scoring.label_functions import RuleError, RuleResult
from engine.scoring.rules import Rule, apply_rules
from engine.specs import CurationSpec, ExperimentSpec
from engine.store import Store
from engine.training.pairs import RuleFn

KEPT = "kept"
"""Count key of kept answers in :attr:`CurationResult.counts`."""
DROPPED = "dropped"
"""Count key of dropped answers in :attr:`CurationResult.counts`."""


@dataclass(frozen=True)
class Decision:
    """Curation's verdict on one teacher answer.

    Attributes:
        idx: The example index.
        keep: Whether the answer may be trained on.
        reasons: Why, e.g. ``rule 'no-prose': reject: ...``, ``judge 'strict': reject``,
            ``SME: reject (alice)``; empty for an answer nothing objected to.
    """

    idx: int
    keep: bool
    reasons: list[str] = field(default_factory=list)


@dataclass
class CurationResult:
    """Every teacher answer's :class:`Decision`, in example order."""

    decisions: list[Decision]
    active: bool = False
    """Whether any evidence was applied (rules on, a judge named, or SME labels found)."""

    @property
    def kept_indices(self) -> list[int]:
        """Indices of the answers curation keeps."""
        return [d.idx for d in self.decisions if d.keep]

    @property
    def counts(self) -> dict[str, int]:
        """``kept``, ``dropped``, and the dropped answers per reason (``rule 'x'``, ``judge 'y'``,
        ``SME``); an answer dropped for two reasons counts under both."""
        out: Counter[str] = Counter({KEPT: 0, DROPPED: 0})
        for d in self.decisions:
            out[KEPT if d.keep else DROPPED] += 1
            if not d.keep:
                out.update({reason_key(r) for r in d.reasons})
        return dict(out)

    def summary(self) -> str:
        """One line for people, e.g. ``kept 40 of 50 teacher answers (dropped: SME 2, ...)``."""
        counts = self.counts
        why = ", ".join(f"{k} {n}" for k, n in sorted(counts.items()) if k not in (KEPT, DROPPED))
        line = f"curation kept {counts[KEPT]} of {len(self.decisions)} teacher answers"
        return f"{line} (dropped: {why})" if why else line

    def to_json(self) -> dict[str, Any]:
        """The counts and every decision, for ``curation.json`` in a run folder."""
        return {
            "counts": self.counts,
            "decisions": [{"idx": d.idx, "keep": d.keep, "reasons": d.reasons} for d in self.decisions],
        }


def reason_key(reason: str) -> str:
    """The counting key of a reason: ``rule 'x': reject: ...`` -> ``rule 'x'``; ``SME: ...`` -> ``SME``."""
    return reason.split(":", 1)[0]


def decide(
    idx: int,
    cfg: CurationSpec,
    rule_results: Sequence[RuleResult] = (),
    verdict: str | None = None,
    sme: dict[str, Any] | None = None,
) -> Decision:
    """Curation's decision on one teacher answer from the evidence about it.

    Args:
        idx: The example index.
        cfg: The curation settings.
        rule_results: The rules' results on the answer (ignored unless ``cfg.rules``).
        verdict: The judge's stored verdict (ignored unless ``cfg.judge``); None: no verdict.
        sme: The SMEs' consensus label row (``label``, ``annotator``), if any.

    Returns:
        The decision; with an SME label and ``cfg.sme``, that label decides.
    """
    reasons = []
    if cfg.rules:
        reasons += [
            f"rule '{r.rule}': reject" + (f": {r.reason}" if r.reason else "")
            for r in rule_results
            if not r.passed
        ]
    if cfg.judge is not None:
        if verdict is None:
            if cfg.judge_missing == "drop":
                reasons.append(f"judge '{cfg.judge}': no verdict")
        elif verdict != "accept":
            reasons.append(f"judge '{cfg.judge}': {verdict}")
    if cfg.sme and sme is not None:
        # The SME label overrides: the other reasons stay listed, to show what it overrode.
        return Decision(
            idx, sme["label"] == "accept", [f"SME: {sme['label']} ({sme['annotator']})", *reasons]
        )
    return Decision(idx, not reasons, reasons)


def workspace_rules(home: str | Path) -> list[Rule]:
    """The workspace's bound rules (none without a rules file).

    Raises:
        RuleError: the rules file is refused; training on unchecked answers would be worse.
    """
    rules, error = load_workspace_rules(Path(home))
    if error:
        raise RuleError(f"curation.rules: {error}")
    return rules


def rule_check(rules: Sequence[Rule]) -> RuleFn:
    """A :data:`engine.training.pairs.RuleFn`: True when no rule rejects the answer."""
    return lambda text: all(r.passed for r in apply_rules(rules, text))


def dpo_rule_fn(spec: ExperimentSpec, home: str | Path) -> RuleFn | None:
    """The rule check DPO pairs are built with: the workspace rules when ``curation.rules``."""
    return rule_check(workspace_rules(home)) if spec.curation.rules else None


def curate(
    store: Store, spec: ExperimentSpec, dataset_id: str, split: str | None = "train"
) -> CurationResult:
    """Decide, for every teacher answer of ``spec``'s teacher on one split, whether to keep it.

    Args:
        store: The workspace store (rules file, judge verdicts and SME labels are read from it).
        spec: The experiment (``curation`` settings and ``teacher_key``).
        dataset_id: The dataset the teacher answered.
        split: Only this split's examples (None: every example with a teacher answer).

    Returns:
        One decision per example that has a teacher answer, in example order.
    """
    cfg, key = spec.curation, spec.teacher_key()
    answers = store.get_teacher_responses(dataset_id, key)
    if split is not None:
        wanted = {e["idx"] for e in store.get_examples(dataset_id, split)}
        answers = {i: a for i, a in answers.items() if i in wanted}
    prefix = teacher_ref(dataset_id, key, 0).removesuffix("0")  # refs of this teacher's answers
    rules = workspace_rules(store.home) if cfg.rules else []
    verdicts: dict[str, str] = {}
    if cfg.judge is not None:
        verdicts = {v["item_ref"]: v["verdict"] for v in store.list_judge_verdicts(cfg.judge, prefix)}
    labels: dict[str, list[dict[str, Any]]] = defaultdict(list)
    if cfg.sme:
        for a in store.annotations(prefix=prefix, current_only=True):
            labels[a["item_ref"]].append(a)
    decisions = []
    for idx, answer in sorted(answers.items()):
        ref = teacher_ref(dataset_id, key, idx)
        decisions.append(
            decide(
                idx,
                cfg,
                apply_rules(rules, answer.get("output") or ""),
                verdicts.get(ref),
                sme_consensus(labels.get(ref, [])),
            )
        )
    return CurationResult(decisions, active=cfg.rules or cfg.judge is not None or bool(labels))
