"""Who may do what: the four roles, the rights each holds, and the acting user.

Every engine function that launches, cancels, resumes, deletes, labels, comments or changes
rules takes the acting user (:class:`Actor`) and calls :func:`require` first, so a page that
forgets to hide a button still cannot act beyond its user's role. Roles are ordered; each holds
the rights of the ones before it:

========== ==========================================================================
viewer     read everything
annotator  + label answers, comment on experiments, edit the error taxonomy
launcher   + launch, extend, resume and cancel jobs, import data, record decisions,
           change the workspace's rules
admin      + set other users' roles, read the audit log
========== ==========================================================================
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, cast

Role = Literal["viewer", "annotator", "launcher", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "annotator", "launcher", "admin")
"""Every role, from the fewest rights to the most."""


class Right(StrEnum):
    """One thing a role may do; the engine's guarded functions each require one."""

    VIEW = "view"
    LABEL = "label"
    COMMENT = "comment"
    TAXONOMY = "taxonomy"
    LAUNCH = "launch"
    CANCEL = "cancel"
    DECIDE = "decide"
    RULES = "rules"
    ADMIN = "admin"


_GAINED: dict[Role, tuple[Right, ...]] = {
    "viewer": (Right.VIEW,),
    "annotator": (Right.LABEL, Right.COMMENT, Right.TAXONOMY),
    "launcher": (Right.LAUNCH, Right.CANCEL, Right.DECIDE, Right.RULES),
    "admin": (Right.ADMIN,),
}
RIGHTS: dict[Role, frozenset[Right]] = {
    role: frozenset(r for earlier in ROLES[: i + 1] for r in _GAINED[earlier]) for i, role in enumerate(ROLES)
}
"""Each role's rights: its own plus every lesser role's."""


def least_role(right: Right) -> Role:
    """The first role (in :data:`ROLES` order) that holds ``right``."""
    return next(role for role in ROLES if right in RIGHTS[role])


def parse_role(value: object) -> Role | None:
    """``value`` as a role (case and surrounding blanks ignored), or None if it is not one."""
    text = str(value).strip().lower() if isinstance(value, str) else ""
    return cast(Role, text) if text in ROLES else None


@dataclass(frozen=True)
class Actor:
    """The user an engine call acts for.

    Attributes:
        subject: A stable, unique id: the OIDC ``sub`` claim, or ``local:<name>`` for the
            server's own user (local single-user mode and the command line).
        name: The display name recorded next to what the user does.
        role: One of :data:`ROLES`.
        email: The e-mail claim, when the identity provider sends one.
        local: True for the server's own user, False for a signed-in user.
    """

    subject: str
    name: str
    role: Role
    email: str = ""
    local: bool = False

    def __post_init__(self) -> None:
        if not self.subject.strip():
            raise ValueError("an actor needs a subject")
        if self.role not in ROLES:
            raise ValueError(f"role {self.role!r} is not one of {', '.join(ROLES)}")

    def can(self, right: Right) -> bool:
        """True if this actor's role holds ``right``."""
        return right in RIGHTS[self.role]


class AccessDenied(PermissionError):
    """The acting user's role lacks the right an engine call needs (nothing was done)."""

    def __init__(self, actor: Actor, right: Right, what: str):
        self.actor, self.right, self.what = actor, right, what
        super().__init__(
            f"{actor.name} ({actor.role}) may not {what}: that needs the {least_role(right)} role "
            "or higher; an admin can change roles"
        )


def require(actor: Actor, right: Right, what: str) -> None:
    """Raise :class:`AccessDenied` unless ``actor`` holds ``right``.

    Args:
        actor: Who acts; anything but an :class:`Actor` is a programming error (TypeError), so
            a caller that still passes a bare name fails loudly instead of acting as nobody.
        right: The right the action needs.
        what: The action, worded to follow "may not" (e.g. ``"launch experiments"``).
    """
    if not isinstance(actor, Actor):
        raise TypeError(f"actor must be an engine.access.Actor, not {type(actor).__name__}")
    if not actor.can(right):
        raise AccessDenied(actor, right, what)


def local_user_name() -> str:
    """The server's own user: ``$SENSEI_LOCAL_USER``, else the operating system's user name."""
    name = os.environ.get("SENSEI_LOCAL_USER", "").strip()
    if name:
        return name
    try:
        return getpass.getuser()  # $USER etc., else the password database
    except (KeyError, OSError):
        return "local"


def local_admin(name: str | None = None) -> Actor:
    """The server's own user as an admin: local single-user mode and the command line.

    Whoever has a shell on the server can edit the workspace anyway, so it acts as an admin.
    """
    name = (name or local_user_name()).strip() or "local"
    return Actor(subject=f"local:{name}", name=name, role="admin", local=True)
