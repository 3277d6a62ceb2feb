"""Is an answer well-formed for its task? Used to filter teacher answers and to score students.

The check is deliberately strict: for JSON tasks the *whole* answer must be one JSON object.
A JSON object wrapped in prose ("Sure! Here it is: {...}") is invalid, because a student
trained on such answers learns to produce the prose too.
"""

from __future__ import annotations

import json
from typing import Any

from engine.specs import TaskSpec


def parse_output(task: TaskSpec, text: str | None, require_fields: bool = True) -> tuple[bool, Any]:
    """Parse one answer according to the task's ``output_kind``.

    * ``json``: ``json.loads`` of the stripped text must give an object; with
      ``require_fields``, every key of ``task.json_fields`` must be present (extra keys are
      allowed). The value is the parsed dict.
    * ``label``: the stripped text must be one of ``task.labels`` (exact match); the value is
      the label.
    * ``text``: any non-empty stripped text; the value is that text.

    Args:
        task: the task spec.
        text: the answer (None counts as invalid).
        require_fields: for JSON tasks, also require all ``json_fields`` keys.

    Returns:
        ``(valid, value)``; ``value`` is None when the answer is invalid.
    """
    if text is None:
        return False, None
    stripped = text.strip()
    if task.output_kind == "json":
        try:
            obj = json.loads(stripped)
        except (ValueError, RecursionError):  # JSONDecodeError, a 5,000-digit int, deep nesting
            return False, None
        if not isinstance(obj, dict):
            return False, None
        if require_fields and any(f not in obj for f in task.json_fields):
            return False, None
        return True, obj
    if task.output_kind == "label":
        return (True, stripped) if stripped in task.labels else (False, None)
    return (True, stripped) if stripped else (False, None)
