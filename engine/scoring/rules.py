"""Label functions as data: declarative rules that reject an answer and say why.

A user writes rules in the UI or in YAML; each is a typed spec (``extra="forbid"``) chosen by
its ``kind``. Rules are *data*: patterns, keywords and schemas are matched against the answer
as text and are never evaluated, imported or executed. The one way to run Python is
``kind: python``, which names a function registered in a file of the workspace's ``rules/``
folder (see :mod:`engine.scoring.label_functions`); the spec itself carries no code.

Example::

    rules = load_rules('''
    - {kind: keywords_forbidden, name: competitors, keywords: [Acme, Globex]}
    - {kind: length_bounds, name: short, max: 400}
    ''')
    apply_rules(rules, answer)  # -> [RuleResult(rule="competitors", passed=True, ...), ...]

Regular expressions use the ``regex`` package (same syntax as ``re``) so that a pattern that
backtracks catastrophically times out instead of hanging a worker.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from engine.scoring.kinds import (
    ForbiddenPhrases,
    JsonSchemaRule,
    KeywordsForbidden,
    LengthBounds,
    PythonRule,
    RegexMustMatch,
    RegexMustNotMatch,
    RequiredFields,
    RuleSpec,
)
from engine.scoring.label_functions import (
    LabelFunction,
    RuleError,
    RuleResult,
    label_function,
    load_label_functions,
)
from engine.scoring.stats import RuleStats, rule_stats
from engine.specs import format_validation_error

__all__ = [
    "ForbiddenPhrases",
    "JsonSchemaRule",
    "KeywordsForbidden",
    "LabelFunction",
    "LengthBounds",
    "PythonRule",
    "RegexMustMatch",
    "RegexMustNotMatch",
    "RequiredFields",
    "Rule",
    "RuleError",
    "RuleResult",
    "RuleSpec",
    "RuleStats",
    "apply_rules",
    "bind_rules",
    "dump_rules",
    "label_function",
    "load_rules",
    "parse_rules",
    "rule_stats",
]

Rule = RuleSpec | LabelFunction
"""Anything :func:`apply_rules` accepts: a rule spec or a loaded label function."""
_ADAPTER: TypeAdapter[list[RuleSpec]] = TypeAdapter(list[RuleSpec])


def parse_rules(data: Any, source: str = "rules") -> list[RuleSpec]:
    """Validate plain data (a list of rule mappings, or ``{"rules": [...]}``) into rule specs.

    Raises:
        RuleError: a message per offending field, naming the rule; or duplicate rule names.
    """
    if isinstance(data, dict) and set(data) == {"rules"}:
        data = data["rules"]
    if not isinstance(data, list):
        raise RuleError(f"{source}: expected a list of rules, got {type(data).__name__}")
    try:
        rules = _ADAPTER.validate_python(data)
    except ValidationError as err:
        raise RuleError(format_validation_error(err, source)) from None
    names = [r.name for r in rules]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise RuleError(f"{source}: rule names must be unique; repeated: {', '.join(dupes)}")
    return rules


def load_rules(text_or_path: str | Path, workspace: Path | None = None) -> list[RuleSpec]:
    """Load rules from YAML or JSON text or a file: data only (``yaml.safe_load``, no tags).

    Args:
        text_or_path: YAML/JSON text, or a path to a ``.yaml``/``.yml``/``.json`` file.
        workspace: when given, ``python`` rules are bound to ``<workspace>/rules/*.py``.
    """
    source, text = "rules", str(text_or_path)
    if isinstance(text_or_path, Path) or (
        "\n" not in text and text.strip().endswith((".yaml", ".yml", ".json"))
    ):
        source = str(text_or_path)
        try:
            text = Path(text_or_path).read_text(encoding="utf-8")
        except OSError as err:
            raise RuleError(f"{source}: cannot read: {err.strerror}") from None
    try:
        data = yaml.safe_load(text) if text.strip() else []
    except yaml.YAMLError as err:
        raise RuleError(f"{source}: invalid YAML/JSON: {str(err)[:300]}") from None
    rules = parse_rules(data if data is not None else [], source)
    return bind_rules(rules, workspace) if workspace is not None else rules


def dump_rules(rules: Sequence[RuleSpec]) -> str:
    """YAML of ``rules`` that :func:`load_rules` reads back."""
    data = [
        {"kind": r.kind, **r.model_dump(mode="json", by_alias=True, exclude_defaults=True)} for r in rules
    ]
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def bind_rules(rules: Sequence[RuleSpec], workspace: Path) -> list[RuleSpec]:
    """Attach each ``python`` rule to its function from ``<workspace>/rules/*.py``.

    Raises:
        RuleError: a named function is not registered in any rules file.
    """
    if not any(isinstance(r, PythonRule) for r in rules):
        return list(rules)
    functions = load_label_functions(workspace)
    bound: list[RuleSpec] = []
    for rule in rules:
        if isinstance(rule, PythonRule):
            if rule.function not in functions:
                known = ", ".join(sorted(functions)) or "none"
                raise RuleError(
                    f"rule {rule.name!r}: no label function {rule.function!r} in "
                    f"{Path(workspace) / 'rules'} (registered: {known})"
                )
            rule = rule.model_copy()  # the caller's spec stays unbound
            rule._bound = functions[rule.function]
        bound.append(rule)
    return bound


def apply_rules(rules: Sequence[Rule], text: str) -> list[RuleResult]:
    """Every rule's verdict on one answer, in rule order."""
    return [rule.check(text) for rule in rules]
