"""Access: who acts, which role they hold, and what each role may do.

* :mod:`engine.access.roles` — roles, rights, :class:`Actor`, :class:`AccessDenied`;
* :mod:`engine.access.guard` — the check guarded engine functions make, and the audit record;
* :mod:`engine.access.identity` — sign-in: roles from a claim, ``roles.toml`` or the workspace;
* :mod:`engine.access.server` — local single-user mode vs. a team server (``make serve``).

The pages hide what a role cannot do; the engine refuses it.
"""

from engine.access.guard import check, done
from engine.access.identity import RolesFileError, read_roles, role_from_claims, roles_path, set_role, sign_in
from engine.access.roles import (
    RIGHTS,
    ROLES,
    AccessDenied,
    Actor,
    Right,
    Role,
    least_role,
    local_admin,
    local_user_name,
    require,
)

__all__ = [
    "RIGHTS",
    "ROLES",
    "AccessDenied",
    "Actor",
    "Right",
    "Role",
    "RolesFileError",
    "check",
    "done",
    "least_role",
    "local_admin",
    "local_user_name",
    "read_roles",
    "require",
    "role_from_claims",
    "roles_path",
    "set_role",
    "sign_in",
]
