"""The check every guarded engine function makes first, and the record it leaves.

:func:`check` refuses an actor whose role lacks the right (and writes the refusal to the
audit log); :func:`done` records an action that happened. Both take anything with the
store's ``record_audit`` method, so the store's own mixins use them too.
"""

from __future__ import annotations

from typing import Any, Protocol

from engine.access.roles import AccessDenied, Actor, Right, require


class AuditLog(Protocol):
    def record_audit(
        self,
        actor: Actor,
        action: str,
        target: str = "",
        detail: dict[str, Any] | None = None,
        outcome: str = "done",
    ) -> None: ...


def check(store: AuditLog, actor: Actor, right: Right, action: str, target: str = "") -> None:
    """Raise :class:`AccessDenied` (and log the refusal) unless ``actor`` holds ``right``.

    Args:
        store: Where the refusal is recorded.
        actor: Who acts.
        right: The right the action needs.
        action: The action as the audit log names it, e.g. ``"launch"`` or ``"label"``; the
            refusal message says ``may not <action>``.
        target: What it acts on (an experiment, job, item ref), when known.
    """
    try:
        require(actor, right, action if not target else f"{action} {target}")
    except AccessDenied:
        store.record_audit(actor, action, target, outcome="refused")
        raise


def done(store: AuditLog, actor: Actor, action: str, target: str = "", **detail: Any) -> None:
    """Record in the audit log that ``actor`` did ``action`` on ``target``.

    ``detail`` holds ids, names and counts only: never a spec, a claim set or a token.
    """
    store.record_audit(actor, action, target, detail or None)
