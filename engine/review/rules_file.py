"""The workspace's rules file, ``<home>/rules.yaml``: read, add and remove declarative rules.

Every write validates the whole list with :func:`engine.scoring.rules.parse_rules` first
(a bad field is refused with a message naming it, and nothing is saved) and replaces the file
atomically, so a reader never sees half a file. Rule fields are data: nothing here imports or
runs code; Python label functions are only *listed* from ``<home>/rules/*.py``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, get_args

import yaml

from engine.access import Actor, Right, check, done
from engine.review.items import RULES_FILE
from engine.scoring.kinds import RuleSpec
from engine.scoring.label_functions import RuleError, load_label_functions, rules_folder
from engine.scoring.rules import dump_rules, load_rules, parse_rules, rule_stats
from engine.store import Store


def _kinds() -> list[str]:
    union = get_args(RuleSpec)[0]
    return [m.model_fields["kind"].default for m in get_args(union)]


DECLARATIVE_KINDS: list[str] = [k for k in _kinds() if k != "python"]
"""Rule kinds a user may write in the UI (``python`` only names a function from a file)."""


def rules_path(home: Path) -> Path:
    """``<home>/rules.yaml``."""
    return Path(home) / RULES_FILE


def read_rules(home: Path) -> list[RuleSpec]:
    """The rules of ``<home>/rules.yaml`` as specs (unbound; empty when there is no file).

    Raises:
        RuleError: the file is not valid.
    """
    path = rules_path(home)
    return load_rules(path) if path.is_file() else []


def _write(home: Path, rules: Sequence[RuleSpec]) -> None:
    path = rules_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".rules-", suffix=".yaml")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(dump_rules(rules))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _raw(home: Path) -> list[dict[str, Any]]:
    path = rules_path(home)
    if not path.is_file():
        return []
    read_rules(home)  # refuse to extend a file that is already broken
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    return list(data["rules"] if isinstance(data, dict) else data)


def add_rule(store: Store, rule: dict[str, Any], *, actor: Actor) -> RuleSpec:
    """Validate ``rule`` together with the existing rules and save it.

    Args:
        store: the workspace.
        rule: a rule mapping (``kind``, ``name`` and the kind's fields).
        actor: who adds it (launchers and admins may).

    Returns:
        The saved rule spec.

    Raises:
        engine.access.AccessDenied: ``actor``'s role may not change rules.
        RuleError: an invalid field or a duplicate name; the file is left untouched.
    """
    check(store, actor, Right.RULES, "change rules", str(rule.get("name") or ""))
    if rule.get("kind") == "python":
        raise RuleError("python rules name a function from the rules/ folder; add them in rules.yaml")
    rules = parse_rules([*_raw(store.home), rule], source="new rule")
    _write(store.home, rules)
    done(store, actor, "add rule", rules[-1].name, kind=rules[-1].kind)
    return rules[-1]


def remove_rule(store: Store, name: str, *, actor: Actor) -> bool:
    """Delete the rule called ``name``; True if there was one.

    Raises:
        engine.access.AccessDenied: ``actor``'s role may not change rules.
    """
    check(store, actor, Right.RULES, "change rules", name)
    rules = read_rules(store.home)
    kept = [r for r in rules if r.name != name]
    if len(kept) == len(rules):
        return False
    _write(store.home, kept)
    done(store, actor, "remove rule", name)
    return True


def label_function_names(home: Path) -> tuple[list[str], str | None]:
    """Names of the Python label functions in ``<home>/rules/*.py``, and an error if refused."""
    if not rules_folder(home).is_dir():
        return [], None
    try:
        return sorted(load_label_functions(home)), None
    except RuleError as err:
        return [], str(err)


def run_rule_stats(store: Store, run_id: str) -> list[dict[str, Any]]:
    """Coverage, overlap and conflict of the workspace's rules over one run's outputs.

    Raises:
        RuleError: the rules file is invalid or names a missing label function.
    """
    path = rules_path(store.home)
    rules = load_rules(path, workspace=store.home) if path.is_file() else []
    texts = [o["output"] for o in store.list_outputs(run_id)]
    rows = []
    for s in rule_stats(rules, texts):
        row = s.to_dict()
        del row["overlap_with"], row["conflict_with"]
        rows.append(row)
    return rows
