"""Review records of the workspace: SME annotations (append-only, full history), the error
taxonomy, stored judge verdicts, and each experiment's discussion (comments and decisions,
append-only). Mixed into :class:`engine.store.Store`.

Writes take the acting user (:class:`engine.access.Actor`), refuse a role that lacks the right
and record who did it: labels and notes carry the actor's subject and display name, taxonomy
changes go to the audit log.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any

from engine.access.guard import check, done
from engine.access.roles import Actor, Right
from engine.store.backends import Connection, upsert_sql
from engine.store.migrations import BUILTIN_CATEGORIES

ANNOTATION_LABELS = ("accept", "reject")
NOTE_KINDS = ("comment", "decision")
MAX_NOTE_CHARS = 20_000


class ReviewRecords:
    """Annotation, taxonomy and judge-verdict methods of :class:`~engine.store.Store`."""

    # Provided by Store: short-lived write and read connections.
    tx: Callable[[], AbstractContextManager[Connection]]
    read: Callable[[], AbstractContextManager[Connection]]
    record_audit: Callable[..., None]  # engine.store.access.AccessRecords

    # ------------------------------------------------------------- annotations
    def add_annotation(
        self, item_ref: str, label: str, category: str | None = None, note: str = "", *, actor: Actor
    ) -> int:
        """Append ``actor``'s label; their earlier labels stay as history. Returns the row id.

        ``item_ref`` names what was judged: ``run:<run_id>:<idx>`` (a student answer) or
        ``teacher:<dataset_id>:<teacher_key>:<idx>`` (a teacher answer). The label records the
        actor's subject (one current label per person and item) and display name.

        Raises:
            AccessDenied: ``actor``'s role may not label.
            ValueError: a label other than accept or reject.
        """
        check(self, actor, Right.LABEL, "label", item_ref)
        if label not in ANNOTATION_LABELS:
            raise ValueError(f"label {label!r} is not one of {', '.join(ANNOTATION_LABELS)}")
        with self.tx() as conn:
            cur = conn.execute(
                "INSERT INTO annotations(item_ref, annotator, annotator_sub, label, category, note, ts)"
                " VALUES (?,?,?,?,?,?,?) RETURNING id",
                (item_ref, actor.name, actor.subject, label, category or None, note.strip(), time.time()),
            )
            return int(cur.fetchone()[0])

    def annotations(
        self,
        item_ref: str | None = None,
        annotator: str | None = None,
        current_only: bool = True,
        prefix: str | None = None,
        annotator_sub: str | None = None,
    ) -> list[dict[str, Any]]:
        """Annotations, oldest first, filtered by item, annotator (display name or subject)
        and/or item-ref prefix.

        With ``current_only`` only each person's (subject's) latest label per item is returned.
        "Latest" is the highest row id, i.e. commit order, not ``ts``: clocks of two machines
        may disagree.
        """
        sql = "SELECT a.* FROM annotations a WHERE 1=1"
        args: list[Any] = []
        if current_only:
            sql += (
                " AND a.id = (SELECT MAX(b.id) FROM annotations b"
                " WHERE b.item_ref = a.item_ref AND b.annotator_sub = a.annotator_sub)"
            )
        filters = (("item_ref", item_ref), ("annotator", annotator), ("annotator_sub", annotator_sub))
        for column, value in filters:
            if value is not None:
                sql += f" AND a.{column}=?"
                args.append(value)
        if prefix:
            sql += " AND substr(a.item_ref, 1, ?) = ?"
            args.extend([len(prefix), prefix])
        with self.read() as conn:
            return [dict(r) for r in conn.execute(sql + " ORDER BY a.id", args)]

    def annotation_history(self, item_ref: str) -> list[dict[str, Any]]:
        """Every label ever given to one item, by anyone, oldest first."""
        return self.annotations(item_ref=item_ref, current_only=False)

    def list_categories(self) -> list[dict[str, Any]]:
        """The error taxonomy: ``name, description, created_at`` (0 for the built-in ones)."""
        # The built-in ones share created_at 0: they keep the order 0002 gave them.
        rank = " ".join(f"WHEN ? THEN {i}" for i in range(len(BUILTIN_CATEGORIES)))
        sql = f"SELECT * FROM error_categories ORDER BY created_at, CASE name {rank} ELSE ? END, name"
        with self.read() as conn:
            rows = conn.execute(sql, (*BUILTIN_CATEGORIES, len(BUILTIN_CATEGORIES)))
            return [dict(r) for r in rows]

    def add_category(self, name: str, description: str = "", *, actor: Actor) -> bool:
        """Add an error category (or update its description). False if the name is blank.

        Raises:
            AccessDenied: ``actor``'s role may not edit the taxonomy.
        """
        name = " ".join(name.split())
        check(self, actor, Right.TAXONOMY, "add error categories", name)
        if not name:
            return False
        with self.tx() as conn:
            conn.execute(
                "INSERT INTO error_categories(name, description, created_at) VALUES (?,?,?)"
                " ON CONFLICT(name) DO UPDATE SET description=excluded.description",
                (name, description.strip(), time.time()),
            )
        done(self, actor, "add category", name)
        return True

    def remove_category(self, name: str, *, actor: Actor) -> bool:
        """Remove a category from the taxonomy; labels that used it keep it. True if removed.

        Raises:
            AccessDenied: ``actor``'s role may not edit the taxonomy.
        """
        check(self, actor, Right.TAXONOMY, "remove error categories", name)
        with self.tx() as conn:
            removed = conn.execute("DELETE FROM error_categories WHERE name=?", (name,)).rowcount == 1
        if removed:
            done(self, actor, "remove category", name)
        return removed

    # ---------------------------------------------------------- judge verdicts
    def save_judge_verdicts(self, judge_name: str, rows: Iterable[dict[str, Any]]) -> None:
        """Upsert one judge's verdicts: ``item_ref``, ``verdict``, optional ``reason``, ``raw``."""
        now = time.time()
        with self.tx() as conn:
            conn.executemany(
                upsert_sql(
                    "judge_verdicts",
                    ("judge_name", "item_ref", "verdict", "reason", "raw", "ts"),
                    key=("judge_name", "item_ref"),
                ),
                [
                    (judge_name, r["item_ref"], r["verdict"], r.get("reason") or "", r.get("raw"), now)
                    for r in rows
                ],
            )

    def list_judge_verdicts(
        self, judge_name: str | None = None, prefix: str | None = None
    ) -> list[dict[str, Any]]:
        """Stored judge verdicts, optionally of one judge and/or under an item-ref prefix."""
        sql = "SELECT * FROM judge_verdicts WHERE 1=1"
        args: list[Any] = []
        if judge_name is not None:
            sql += " AND judge_name=?"
            args.append(judge_name)
        if prefix:
            sql += " AND substr(item_ref, 1, ?) = ?"
            args.extend([len(prefix), prefix])
        with self.read() as conn:
            return [dict(r) for r in conn.execute(sql + " ORDER BY judge_name, item_ref", args)]

    def judge_names(self) -> list[str]:
        """Names of the judges that have verdicts in this workspace."""
        with self.read() as conn:
            return [r[0] for r in conn.execute("SELECT DISTINCT judge_name FROM judge_verdicts ORDER BY 1")]

    # -------------------------------------------------------------- discussion
    def add_note(self, experiment_id: str, text: str, kind: str = "comment", *, actor: Actor) -> int:
        """Append ``actor``'s comment, or decision record (e.g. "collect 2k more"), to an experiment.

        Raises:
            AccessDenied: ``actor``'s role may not comment (annotators and up) or record
                decisions (launchers and up).
            ValueError: empty or over-long text, an unknown kind or experiment.
        """
        if kind not in NOTE_KINDS:
            raise ValueError(f"note kind {kind!r} is not one of {', '.join(NOTE_KINDS)}")
        right, action = (Right.COMMENT, "comment on")
        if kind == "decision":
            right, action = Right.DECIDE, "record decisions on"
        check(self, actor, right, action, experiment_id)
        text = text.strip()
        if not text:
            raise ValueError("a note needs some text")
        if len(text) > MAX_NOTE_CHARS:
            raise ValueError(f"a note holds at most {MAX_NOTE_CHARS:,} characters ({len(text):,} given)")
        with self.tx() as conn:
            if conn.execute("SELECT 1 FROM experiments WHERE id=?", (experiment_id,)).fetchone() is None:
                raise ValueError(f"no experiment {experiment_id}")
            cur = conn.execute(
                "INSERT INTO experiment_notes(experiment_id, kind, author, author_sub, text, ts)"
                " VALUES (?,?,?,?,?,?) RETURNING id",
                (experiment_id, kind, actor.name, actor.subject, text, time.time()),
            )
            return int(cur.fetchone()[0])

    def list_notes(self, experiment_id: str) -> list[dict[str, Any]]:
        """An experiment's comments and decisions, oldest first."""
        with self.read() as conn:
            rows = conn.execute(
                "SELECT id, experiment_id, kind, author, author_sub, text, ts FROM experiment_notes"
                " WHERE experiment_id=? ORDER BY id",
                (experiment_id,),
            )
            return [dict(r) for r in rows]
