"""What the Access page (admins only) shows: who may do what, who signed in, what happened."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import pandas as pd

from engine.access import RIGHTS, ROLES, Right

RIGHT_WORDS: dict[Right, str] = {
    Right.VIEW: "see every page",
    Right.LABEL: "label answers (Review)",
    Right.COMMENT: "comment on experiments",
    Right.TAXONOMY: "edit the error categories",
    Right.LAUNCH: "launch, extend, resume; import data; judges; Compare; teacher tries",
    Right.CANCEL: "cancel jobs and experiments",
    Right.DECIDE: "record decisions on experiments",
    Right.RULES: "change the rules",
    Right.ADMIN: "set roles, read this page",
}


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else ""


def rights_frame() -> pd.DataFrame:
    """One row per right, one column per role: ✓ where the role holds it."""
    rows = [
        {"right": RIGHT_WORDS[r], **{role: "✓" if r in RIGHTS[role] else "" for role in ROLES}} for r in Right
    ]
    return pd.DataFrame(rows, columns=["right", *ROLES])


def users_frame(users: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Everyone who signed in: name, e-mail, subject, role and where it comes from, last seen."""
    rows = [
        {
            "name": u["name"],
            "email": u["email"],
            "subject": u["subject"],
            "role": u["role"],
            "role from": u["role_source"],
            "first sign-in": _when(u["created_at"]),
            "last seen": _when(u["last_seen_at"]),
        }
        for u in users
    ]
    columns = ["name", "email", "subject", "role", "role from", "first sign-in", "last seen"]
    return pd.DataFrame(rows, columns=columns)


def user_label(user: dict[str, Any]) -> str:
    """``Ann Lee (ann@example.com) · annotator`` for the role picker."""
    email = f" ({user['email']})" if user["email"] and user["email"] != user["name"] else ""
    return f"{user['name']}{email} · {user['role']}"


def audit_frame(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """The audit log as a table, newest first: when, who, role, action, target, outcome, detail."""
    out = [
        {
            "when": _when(r["ts"]),
            "who": r["actor_name"],
            "subject": r["actor_sub"],
            "role": r["actor_role"],
            "action": r["action"],
            "target": r["target"],
            "outcome": r["outcome"],
            "detail": json.dumps(r["detail"], ensure_ascii=False) if r["detail"] else "",
        }
        for r in rows
    ]
    columns = ["when", "who", "subject", "role", "action", "target", "outcome", "detail"]
    return pd.DataFrame(out, columns=columns)
