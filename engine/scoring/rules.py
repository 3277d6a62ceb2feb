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
    "format_rule_errors",
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
        raise RuleError(format_rule_errors(err, data, source)) from None
    names = [r.name for r in rules]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise RuleError(f"{source}: rule names must be unique; repeated: {', '.join(dupes)}")
    return rules


def _rule_words(position: int, raw: Any) -> tuple[str, str | None]:
    """``rule 2 'no_ids' (regex_must_match)`` for the rule at 0-based ``position``, and its name."""
    entry = raw if isinstance(raw, dict) else {}
    name, kind = entry.get("name"), entry.get("kind")
    who = f"rule {position + 1}"
    if isinstance(name, str) and name:
        who += f" {name!r}"
    if isinstance(kind, str) and kind:
        who += f" ({kind})"
    return who, name if isinstance(name, str) else None


def format_rule_errors(err: ValidationError, data: list[Any], source: str = "rules") -> str:
    """Pydantic errors about a list of rules, each naming the rule in words.

    ``1.regex_must_match.pattern: rule 'b': pattern: invalid ...`` becomes
    ``rule 2 'b' (regex_must_match): pattern: invalid ...``: the position counts from 1, the
    kind tag pydantic puts in the path is dropped, and so is the rule's name where the field
    validator already wrote it.
    """
    lines = []
    for e in err.errors():
        loc, msg = list(e["loc"]), e["msg"].removeprefix("Value error, ")
        if not loc or not isinstance(loc[0], int):
            lines.append(f"{source}: {'.'.join(map(str, loc)) or '(top level)'}: {msg}")
            continue
        position = int(loc.pop(0))
        raw = data[position] if position < len(data) else None
        who, name = _rule_words(position, raw)
        if loc and isinstance(raw, dict) and loc[0] == raw.get("kind"):
            loc.pop(0)  # the union's tag, already in ``who``
        field = ".".join(str(p) for p in loc)
        if name is not None:
            msg = msg.removeprefix(f"rule {name!r}: ")
        if field:
            msg = msg.removeprefix(f"{field}: ")
        lines.append(f"{source}: {who}: {field}: {msg}" if field else f"{source}: {who}: {msg}")
    return "\n".join(lines)


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
