"""Python label functions, loaded only from files in the workspace's ``rules/`` folder.

Declarative rules (:mod:`engine.scoring.rules`) cover most needs; when they do not, a
user with access to the workspace writes a function in ``<workspace>/rules/<anything>.py``::

    from engine.scoring.label_functions import label_function

    @label_function("no_refund_promises")
    def no_refund_promises(text: str):
        \"\"\"Support answers must not promise refunds.\"\"\"
        if "refund" in text.lower() and "will" in text.lower():
            return False, "promises a refund"
        return True

A label function returns ``True``/``False`` (pass/reject), ``"accept"``/``"reject"``/``"pass"``
(``"accept"`` is a positive vote, used by the overlap/conflict stats), optionally paired with a
reason as a 2-tuple, or ``None`` (pass). An exception or any other return value rejects the
answer with a reason that starts with ``error:``, so a broken function is visible in the stats.

Security boundary: code runs only from files already on the workspace's disk, imported by
path. Nothing that arrives through the browser or a rules YAML is ever executed; a rule spec
can only *name* a registered function.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

_MARK = "__sensei_label_function__"


class RuleError(ValueError):
    """A rule or label function was refused; the message names the rule, file or field."""


@dataclass(frozen=True)
class RuleResult:
    """One rule's verdict on one answer.

    Attributes:
        rule: the rule's name.
        passed: False when the rule rejects the answer.
        reason: why it was rejected (empty when it passed, unless the rule explains a pass).
        accepted: True for an explicit positive vote (only Python label functions cast one).
    """

    rule: str
    passed: bool
    reason: str = ""
    accepted: bool = False

    def __post_init__(self) -> None:
        if self.accepted and not self.passed:
            raise ValueError("a rejected answer cannot also be accepted")

    @property
    def vote(self) -> str:
        """``reject``, ``accept`` (explicit positive vote) or ``pass`` (no objection)."""
        return "reject" if not self.passed else "accept" if self.accepted else "pass"


def label_function(name: str, description: str = "") -> Callable[[F], F]:
    """Register a function of a rules file as a label function called ``name``.

    Args:
        name: the name rule specs refer to (``kind: python, function: <name>``); an identifier.
        description: shown in the UI; defaults to the function's docstring's first line.
    """
    if not name.isidentifier():
        raise RuleError(f"label function name {name!r} must be an identifier")

    def mark(fn: F) -> F:
        setattr(fn, _MARK, (name, description))
        return fn

    return mark


@dataclass(frozen=True)
class LabelFunction:
    """A registered function from ``<workspace>/rules/*.py``.

    Attributes:
        name: registered name.
        fn: the function, called as ``fn(text)``.
        path: the file it came from.
        description: what it checks.
    """

    name: str
    fn: Callable[[str], Any]
    path: Path
    description: str = ""

    def check(self, text: str) -> RuleResult:
        """Call the function on one answer and read its verdict (see the module docstring)."""
        try:
            out = self.fn(text)
        except Exception as err:  # a user's bug must not sink the batch
            return RuleResult(self.name, False, f"error: {type(err).__name__}: {err}")
        reason = ""
        if isinstance(out, tuple) and len(out) == 2 and isinstance(out[1], str):
            out, reason = out
        if type(out).__name__ in ("bool", "bool_"):  # numpy's bool too, but never 0/1
            out = "pass" if out else "reject"
        vote = "pass" if out is None else out if isinstance(out, str) else None
        if vote == "pass":
            return RuleResult(self.name, True, reason)
        if vote == "accept":
            return RuleResult(self.name, True, reason, accepted=True)
        if vote == "reject":
            return RuleResult(self.name, False, reason or f"rejected by {self.name}")
        return RuleResult(self.name, False, f"error: returned {out!r}; expected bool, accept/reject/pass")


def rules_folder(workspace: Path) -> Path:
    """The only folder label-function code is ever loaded from: ``<workspace>/rules``."""
    return Path(workspace) / "rules"


def _import_file(path: Path) -> Any:
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:10]
    module_name = f"sensei_rules_{digest}_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise RuleError(f"{path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look modules up here
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        sys.modules.pop(module_name, None)
        raise RuleError(f"{path}: failed to import: {type(err).__name__}: {err}") from None
    return module


def load_label_functions(workspace: Path) -> dict[str, LabelFunction]:
    """Import every ``<workspace>/rules/*.py`` (re-read each call) and collect its label functions.

    Files are imported by path, in name order; a file whose real path lies outside the folder
    (a symlink pointing elsewhere) is refused.

    Returns:
        ``{name: LabelFunction}``; empty when the folder does not exist.

    Raises:
        RuleError: a file fails to import, escapes the folder, or two functions share a name.
    """
    folder = rules_folder(workspace)
    if not folder.is_dir():
        return {}
    root = folder.resolve()
    found: dict[str, LabelFunction] = {}
    for path in sorted(folder.glob("*.py")):
        real = path.resolve()
        if real.parent != root:
            raise RuleError(f"{path}: resolves to {real}, outside {root}; refused")
        for obj in vars(_import_file(real)).values():
            mark = getattr(obj, _MARK, None) if callable(obj) else None
            if mark is None:
                continue
            name, description = mark
            if name in found and found[name].fn is not obj:
                raise RuleError(f"label function {name!r} is defined in both {found[name].path} and {real}")
            doc = (getattr(obj, "__doc__", None) or "").strip().splitlines()
            found[name] = LabelFunction(name, obj, real, description or (doc[0] if doc else ""))
    return found
