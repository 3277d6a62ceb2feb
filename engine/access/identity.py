"""Signed-in users: their role from a claim, the roles file or the workspace, and sign-in itself.

A user's role is decided, in this order, by:

1. the identity provider: the ID-token claim named by ``roles_claim`` in the roles file
   (a string or a list; the highest role it names counts);
2. the roles file, ``<workspace>/roles.toml``: ``[users]`` maps a subject or an e-mail to a role;
3. the workspace: the role stored at the user's first sign-in, which an admin may change on the
   Access page;
4. a first sign-in: the very first user of a workspace becomes its admin; everyone after gets
   ``default_role`` (viewer unless the file says otherwise).

The roles file, all keys optional::

    roles_claim = "sensei_role"     # an ID-token claim naming the role
    default_role = "viewer"         # the role of a new user the file does not list
    [users]
    "alice@example.com" = "admin"   # by e-mail or by subject
    "00u1b2c3" = "launcher"
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.access.guard import check
from engine.access.roles import ROLES, Actor, Right, Role, parse_role

if TYPE_CHECKING:
    from engine.store import Store

ROLES_FILE = "roles.toml"


class RolesFileError(ValueError):
    """The roles file cannot be read; nobody signs in until it is fixed (fail closed)."""


class RolesConfig(BaseModel):
    """``<workspace>/roles.toml``."""

    model_config = ConfigDict(extra="forbid")

    roles_claim: str | None = None
    """The ID-token claim that names each user's role (e.g. ``groups``); unset: no claim is read."""
    default_role: Role = "viewer"
    """The role of a new user whom neither the claim nor ``users`` places (after the first)."""
    users: dict[str, Role] = Field(default_factory=dict)
    """Subject or e-mail -> role; wins over the role an admin set in the dashboard."""

    def role_of(self, subject: str, email: str) -> Role | None:
        """The role the file gives this user (by subject first, then by e-mail), if any."""
        if subject in self.users:
            return self.users[subject]
        folded = {k.strip().lower(): v for k, v in self.users.items()}
        return folded.get(email.strip().lower()) if email else None

    def names_an_admin(self) -> bool:
        return "admin" in self.users.values()


def roles_path(home: str | Path) -> Path:
    """``<home>/roles.toml``."""
    return Path(home) / ROLES_FILE


def read_roles(home: str | Path) -> RolesConfig:
    """The workspace's roles file (defaults when there is none).

    Raises:
        RolesFileError: not TOML, an unknown key, or a role that is not one of :data:`ROLES`.
    """
    path = roles_path(home)
    if not path.is_file():
        return RolesConfig()
    try:
        return RolesConfig.model_validate(tomllib.loads(path.read_text(encoding="utf-8")))
    except tomllib.TOMLDecodeError as err:
        raise RolesFileError(f"{path}: not valid TOML: {err}") from None
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(file)'}: {e['msg']}" for e in err.errors()
        )
        raise RolesFileError(f"{path}: {problems} (roles are {', '.join(ROLES)})") from None


def role_from_claims(claims: Mapping[str, Any], claim: str | None) -> Role | None:
    """The highest role named by ``claims[claim]`` (a string or a list of strings), if any."""
    if not claim or claim not in claims:
        return None
    value = claims[claim]
    named = [parse_role(v) for v in (value if isinstance(value, list | tuple) else [value])]
    found = [r for r in named if r is not None]
    return max(found, key=ROLES.index) if found else None


def display_name(claims: Mapping[str, Any]) -> str:
    """What to call the user: ``name``, else ``preferred_username``, e-mail, then ``sub``."""
    for key in ("name", "preferred_username", "email", "sub"):
        value = claims.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return ""


def sign_in(store: Store, claims: Mapping[str, Any]) -> Actor:
    """The acting user for a signed-in identity; records the user (and a first sign-in).

    Args:
        store: The workspace; its ``roles.toml`` is read on every call, so an edit applies at
            the user's next page view.
        claims: The identity provider's claims (``st.user``): ``sub`` is required; ``name``,
            ``email`` and the roles claim are read when present. Nothing else is kept.

    Raises:
        ValueError: no ``sub`` claim.
        RolesFileError: the roles file is broken.
    """
    subject = str(claims.get("sub") or "").strip()
    if not subject:
        raise ValueError("the identity provider sent no 'sub' claim: cannot tell who this is")
    config = read_roles(store.home)
    email = str(claims.get("email") or "").strip()
    name = display_name(claims)
    decided: tuple[str, str] | None = None
    if (role := role_from_claims(claims, config.roles_claim)) is not None:
        decided = (role, f"claim {config.roles_claim}")
    elif (role := config.role_of(subject, email)) is not None:
        decided = (role, ROLES_FILE)
    first = "admin" if not config.names_an_admin() else config.default_role
    row, change = store.save_sign_in(subject, name, email, decided, first, config.default_role)
    actor = Actor(subject=subject, name=name, role=row["role"], email=email)
    if change == "new":
        detail = {"role": row["role"], "source": row["role_source"]}
        store.record_audit(actor, "first sign-in", subject, detail)
    elif change == "role":
        store.record_audit(actor, "role from " + row["role_source"], subject, {"role": row["role"]})
    return actor


def set_role(store: Store, subject: str, role: str, *, actor: Actor) -> None:
    """An admin gives a user another role, unless the claim or the roles file decides it.

    Raises:
        AccessDenied: ``actor`` is not an admin.
        ValueError: the user's role comes from the identity provider or the roles file (change
            it there), an unknown user or role, or the last admin demoted.
    """
    check(store, actor, Right.ADMIN, "set roles", subject)
    user = store.get_user(subject)
    if user is not None and user["role_source"].startswith(("claim", ROLES_FILE)):
        raise ValueError(
            f"{user['name']}'s role comes from the {user['role_source']}: change it there, not here"
        )
    store.set_user_role(subject, role, actor=actor)
