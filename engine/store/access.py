"""Access records of the workspace: the users who signed in (with their roles) and the audit
log of what each did or was refused. Mixed into :class:`engine.store.Store`.

The audit log is append-only. It holds subjects, display names, roles, action names, targets
(ids and names) and small details; never a spec, a token, a claim set or a secret.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from engine.access.guard import check, done
from engine.access.roles import ROLES, Actor, Right
from engine.redaction import redact_url
from engine.store.backends import Connection

AUDIT_OUTCOMES = ("done", "refused")


class AccessRecords:
    """User and audit-log methods of :class:`~engine.store.Store`."""

    # Provided by Store: short-lived write and read connections.
    tx: Callable[[], AbstractContextManager[Connection]]
    read: Callable[[], AbstractContextManager[Connection]]

    # ------------------------------------------------------------------- audit
    def record_audit(
        self,
        actor: Actor,
        action: str,
        target: str = "",
        detail: dict[str, Any] | None = None,
        outcome: str = "done",
    ) -> None:
        """Append one line to the audit log (its own transaction)."""
        if outcome not in AUDIT_OUTCOMES:
            raise ValueError(f"outcome {outcome!r} is not one of {', '.join(AUDIT_OUTCOMES)}")
        blob = redact_url(json.dumps(detail or {}, sort_keys=True, default=str))
        with self.tx() as conn:
            conn.execute(
                "INSERT INTO audit_log(ts, actor_sub, actor_name, actor_role, action, target, detail_json,"
                " outcome) VALUES (?,?,?,?,?,?,?,?)",
                (time.time(), actor.subject, actor.name, actor.role, action, target, blob, outcome),
            )

    def audit_log(
        self,
        *,
        actor: Actor,
        limit: int = 500,
        subject: str | None = None,
        action: str | None = None,
        outcome: str | None = None,
    ) -> list[dict[str, Any]]:
        """The audit log, newest first, optionally of one user, action or outcome (admins only)."""
        check(self, actor, Right.ADMIN, "read the audit log")
        sql, args = "SELECT * FROM audit_log WHERE 1=1", []
        for column, value in (("actor_sub", subject), ("action", action), ("outcome", outcome)):
            if value is not None:
                sql += f" AND {column}=?"
                args.append(value)
        sql += f" ORDER BY id DESC LIMIT {int(limit)}"
        with self.read() as conn:
            rows = [dict(r) for r in conn.execute(sql, args)]
        for row in rows:
            row["detail"] = json.loads(row.pop("detail_json") or "{}")
        return rows

    # ------------------------------------------------------------------- users
    def get_user(self, subject: str) -> dict[str, Any] | None:
        """One signed-in user's row: ``subject, name, email, role, role_source, ...``."""
        with self.read() as conn:
            row = conn.execute("SELECT * FROM users WHERE subject=?", (subject,)).fetchone()
            return dict(row) if row else None

    def list_users(self) -> list[dict[str, Any]]:
        """Everyone who has signed in, in order of first sign-in."""
        with self.read() as conn:
            return [dict(r) for r in conn.execute("SELECT * FROM users ORDER BY created_at, subject")]

    def save_sign_in(
        self,
        subject: str,
        name: str,
        email: str,
        decided: tuple[str, str] | None,
        first_role: str,
        default_role: str,
        refresh_after_s: float = 600.0,
    ) -> tuple[dict[str, Any], str]:
        """Record a sign-in; returns the user's row and what changed.

        All in one transaction, so two people signing in at once on an empty workspace cannot
        both become its first user.

        Args:
            subject, name, email: From the identity provider.
            decided: ``(role, source)`` when the identity provider's claim or the roles file
                decides the role; it replaces the stored one.
            first_role: A new user's role when nobody has signed in yet (source ``first user``).
            default_role: A new user's role otherwise (source ``default``).
            refresh_after_s: ``last_seen_at`` is rewritten at most this often (a sign-in is
                recorded on every page view; most should not write).

        Returns:
            ``(row, change)`` where change is ``"new"``, ``"role"``, ``"seen"`` or ``""``.
        """
        now = time.time()
        known = self.get_user(subject)
        if (
            known is not None
            and (known["name"], known["email"]) == (name, email)
            and (decided is None or decided == (known["role"], known["role_source"]))
            and now - known["last_seen_at"] <= refresh_after_s
        ):
            return known, ""  # the usual page view: a read, no write lock
        with self.tx() as conn:
            row = conn.execute("SELECT * FROM users WHERE subject=?", (subject,)).fetchone()
            if row is None:
                if decided is not None:
                    role, source = decided
                elif conn.execute("SELECT 1 FROM users LIMIT 1").fetchone() is None:
                    role, source = first_role, "first user"
                else:
                    role, source = default_role, "default"
                conn.execute(
                    "INSERT INTO users(subject, name, email, role, role_source, created_at, last_seen_at)"
                    " VALUES (?,?,?,?,?,?,?)",
                    (subject, name, email, role, source, now, now),
                )
                change = "new"
            else:
                role, source = decided if decided is not None else (row["role"], row["role_source"])
                if (role, source) != (row["role"], row["role_source"]):
                    change = "role"
                elif (name, email) != (row["name"], row["email"]) or (
                    now - row["last_seen_at"] > refresh_after_s
                ):
                    change = "seen"
                else:
                    return dict(row), ""
                conn.execute(
                    "UPDATE users SET name=?, email=?, role=?, role_source=?, last_seen_at=? WHERE subject=?",
                    (name, email, role, source, now, subject),
                )
            return dict(conn.execute("SELECT * FROM users WHERE subject=?", (subject,)).fetchone()), change

    def set_user_role(self, subject: str, role: str, *, actor: Actor) -> None:
        """Give a signed-in user another role (admins only; the last admin stays one).

        Raises:
            AccessDenied: ``actor`` is not an admin.
            ValueError: an unknown user or role, or the workspace's last admin demoted.
        """
        check(self, actor, Right.ADMIN, "set roles", subject)
        if role not in ROLES:
            raise ValueError(f"role {role!r} is not one of {', '.join(ROLES)}")
        with self.tx() as conn:
            row = conn.execute("SELECT role FROM users WHERE subject=?", (subject,)).fetchone()
            if row is None:
                raise ValueError(f"nobody with subject {subject!r} has signed in")
            admins = conn.execute("SELECT COUNT(*) FROM users WHERE role='admin'").fetchone()[0]
            if row["role"] == "admin" and role != "admin" and admins <= 1:
                raise ValueError("this is the workspace's last admin: make someone else admin first")
            conn.execute("UPDATE users SET role=?, role_source='admin' WHERE subject=?", (role, subject))
        done(self, actor, "set role", subject, role=role, was=row["role"])
