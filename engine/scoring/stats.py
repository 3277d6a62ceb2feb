"""Coverage, overlap and conflict of a set of rules over a batch of answers.

The statistics follow weak-supervision practice (Snorkel's label-function analysis), with
each rule casting one vote per answer: ``reject``, ``accept`` (only Python label functions
cast an explicit positive vote) or ``pass`` (no objection, i.e. abstain):

* coverage: fraction of answers the rule votes on (for declarative rules, the reject rate);
* overlap: fraction of answers the rule votes on *and* at least one other rule votes on too;
* conflict: fraction of answers the rule votes on while another rule votes the opposite way.

A rule with high coverage and little overlap does unique work; one whose coverage is all
overlap duplicates others; conflicts point at rules that disagree about what "good" means.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from engine.scoring.label_functions import RuleResult


class _Checks(Protocol):
    @property
    def name(self) -> str: ...

    def check(self, text: str) -> RuleResult: ...


@dataclass(frozen=True)
class RuleStats:
    """One rule's statistics over ``n`` answers (fractions of ``n``).

    Attributes:
        rule: rule name.
        n: answers checked.
        coverage: fraction voted on (rejected or explicitly accepted).
        reject_rate: fraction rejected.
        accept_rate: fraction explicitly accepted.
        overlap: fraction voted on where another rule voted too.
        conflict: fraction voted on where another rule voted the opposite way.
        errors: answers on which the rule itself failed (reason starts with ``error:``).
        overlap_with: per other rule, fraction of answers both voted on.
        conflict_with: per other rule, fraction of answers they voted on oppositely.
    """

    rule: str
    n: int
    coverage: float
    reject_rate: float
    accept_rate: float
    overlap: float
    conflict: float
    errors: int = 0
    overlap_with: dict[str, float] = field(default_factory=dict)
    conflict_with: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (for the store and the UI's tables)."""
        return dict(self.__dict__)


def _mean(mask: np.ndarray) -> float:
    return float(mask.mean()) if mask.size else 0.0


def rule_stats(
    rules: Sequence[_Checks],
    texts: Sequence[str],
    results: Sequence[Sequence[RuleResult]] | None = None,
) -> list[RuleStats]:
    """Per-rule coverage, overlap and conflict (see the module docstring).

    Args:
        rules: rule specs or label functions (anything with ``name`` and ``check``).
        texts: the answers.
        results: ``apply_rules(rules, text)`` for each text, when already computed.

    Returns:
        One :class:`RuleStats` per rule, in rule order.
    """
    if results is None:
        results = [[rule.check(text) for rule in rules] for text in texts]
    if len(results) != len(texts) or any(len(row) != len(rules) for row in results):
        raise ValueError("results must hold one verdict per rule for each text")
    names = [rule.name for rule in rules]
    sign = {"reject": -1, "pass": 0, "accept": 1}
    # votes[r, t]: -1 reject, 0 pass, +1 accept, for rule r on text t.
    votes = np.array([[sign[res.vote] for res in row] for row in results], dtype=np.int8).T
    votes = votes.reshape(len(rules), len(texts))
    voted = votes != 0
    n_voted = voted.sum(axis=0)
    n_pos, n_neg = (votes > 0).sum(axis=0), (votes < 0).sum(axis=0)
    stats = []
    for i, name in enumerate(names):
        others = n_voted - voted[i] > 0
        opposed = ((votes[i] > 0) & (n_neg > 0)) | ((votes[i] < 0) & (n_pos > 0))
        errors = sum(row[i].reason.startswith("error:") for row in results)
        stats.append(
            RuleStats(
                rule=name,
                n=len(texts),
                coverage=_mean(voted[i]),
                reject_rate=_mean(votes[i] < 0),
                accept_rate=_mean(votes[i] > 0),
                overlap=_mean(voted[i] & others),
                conflict=_mean(opposed),
                errors=int(errors),
                overlap_with={o: _mean(voted[i] & voted[j]) for j, o in enumerate(names) if j != i},
                conflict_with={
                    o: _mean(votes[i].astype(int) * votes[j] < 0) for j, o in enumerate(names) if j != i
                },
            )
        )
    return stats
