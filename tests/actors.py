"""Acting users for tests: the local admin, and named people of any role.

Every engine function that acts takes one (``actor=``); see :mod:`engine.access`.
"""

from __future__ import annotations

from engine.access import Actor, Role, local_admin

ADMIN = local_admin("tester")
"""The server's own user, as the command line and local single-user mode act."""


def person(name: str, role: Role = "annotator") -> Actor:
    """A signed-in user called ``name`` (subject ``sub-<name>``) with ``role``."""
    return Actor(subject=f"sub-{name}", name=name, role=role, email=f"{name}@example.com")
