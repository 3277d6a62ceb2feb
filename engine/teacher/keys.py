"""Which API keys Sensei may read: only environment variables an admin declared.

A teacher or judge names its key by the *name* of an environment variable
(``teacher.api_key_env``). On a shared server that name must not be free: a user who could
type ``AWS_SECRET_ACCESS_KEY`` and a base URL of their own would receive that secret as a
bearer token. So the names are an allowlist, declared by whoever starts the server::

    SENSEI_KEY_ENVS=OPENAI_API_KEY,TOGETHER_API_KEY make run

The environment variable is the one source of truth: the dashboard, the scheduler and every
worker it spawns read the same declaration (workers inherit the environment), and the CLI
does too. The engine checks a name when a job is launched (:func:`check_spec_keys`, so
nothing undeclared is queued) and again when the key is read (:func:`require_declared` in
:func:`engine.teacher.client.resolve_api_key`), so a crafted job row is refused in the
worker as well. A refusal never looks the variable up: its message is the same whether or
not the variable exists.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from engine.specs import SpecError

if TYPE_CHECKING:
    from engine.specs import ExperimentSpec

KEY_ENVS_VAR = "SENSEI_KEY_ENVS"
"""The server environment variable listing the key names Sensei may read, comma-separated."""
NO_KEY = ""
"""The choice "no key" in key pickers (local servers that accept any key)."""
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class UndeclaredKeyError(SpecError):
    """A spec names an API key variable the server did not declare in ``SENSEI_KEY_ENVS``."""


def declared_key_envs() -> tuple[str, ...]:
    """The key names declared in ``SENSEI_KEY_ENVS``, in order, without repeats.

    Entries that are not environment variable names (blank, ``sk-...``) are ignored: the
    declaration lists names, never keys.
    """
    raw = os.environ.get(KEY_ENVS_VAR, "")
    names = (part.strip() for part in raw.split(","))
    return tuple(dict.fromkeys(n for n in names if _NAME.fullmatch(n) and not n.startswith("sk-")))


def undeclared_message(name: str, field: str) -> str:
    """Why ``name`` is refused, naming ``field``; independent of whether the variable is set."""
    declared = ", ".join(declared_key_envs()) or "none"
    return (
        f"{field}: {name} is not an API key name this server declares (declared: {declared}); "
        f"an admin lists the names Sensei may read in the {KEY_ENVS_VAR} environment variable"
    )


def require_declared(name: str | None, field: str = "teacher.api_key_env") -> None:
    """Refuse a key name the server did not declare; ``None`` or ``""`` (no key) passes.

    Raises:
        UndeclaredKeyError: naming ``field`` and the declared names (the variable itself is
            never looked up, so the message does not say whether it exists).
    """
    if name and name not in declared_key_envs():
        raise UndeclaredKeyError(undeclared_message(name, field))


def check_spec_keys(spec: ExperimentSpec) -> None:
    """Refuse an experiment whose teacher (in any value of ``ablation.vary``) names an
    undeclared key variable.

    Raises:
        UndeclaredKeyError: naming ``teacher.api_key_env``.
    """
    for _, cell in spec.variant_specs():
        require_declared(cell.teacher.api_key_env, "teacher.api_key_env")


def key_choices(current: str | None = None) -> list[str]:
    """What a key picker offers: "no key" (``""``), then the declared names.

    ``current`` (a name already in a form, e.g. from a loaded spec) is kept as a choice even
    when undeclared, so the form shows what the spec says and launching it is refused with
    the reason, instead of the name silently turning into "no key".
    """
    choices = [NO_KEY, *declared_key_envs()]
    if current and current not in choices:
        choices.append(current)
    return choices


def key_label(name: str) -> str:
    """How a key picker shows a choice: ``no key``, a declared name, or ``NAME (not declared)``."""
    if not name:
        return "no key"
    return name if name in declared_key_envs() else f"{name} (not declared)"


def key_status(name: str | None) -> str:
    """Whether a declared key variable is set in this process — never its value.

    An undeclared name is never looked up: the answer is ``not declared`` whether or not
    such a variable exists.
    """
    if not name:
        return "no key needed"
    if name not in declared_key_envs():
        return "not declared"
    return "set" if os.environ.get(name) else "not set"
