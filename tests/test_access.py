"""Roles checked by the engine: every function that acts refuses a role lacking the right.

Each guarded engine function is called twice through its public interface: as the role just
below the least one allowed (refused with AccessDenied, nothing written, the refusal in the
audit log) and as that least role (done). Sign-in: the first user of a workspace becomes its
admin; roles come from an ID-token claim, the workspace's roles.toml or an admin.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from engine import ablation, jobs
from engine.access import (
    RIGHTS,
    ROLES,
    AccessDenied,
    Actor,
    Right,
    RolesFileError,
    least_role,
    local_admin,
    set_role,
    sign_in,
)
from engine.data import diversity, embed_job
from engine.data.import_job import queue_import
from engine.judges import job as judge_job
from engine.judges import pairwise
from engine.judges.small import flow as small_flow
from engine.review import rules_file
from engine.serving import compare as serving_compare
from engine.serving import server as serving_server
from engine.specs import TaskSpec, demo_spec
from engine.store import Store
from engine.teacher import playground
from engine.teacher.playground import launch_teacher_job
from engine.training import wandb_links
from engine.training.resume import resume_job
from engine.ui import data as data_view
from engine.ui import teacher as teacher_view
from tests.actors import ADMIN, person
from tests.review_data import Populated, populate

# ------------------------------------------------------------------------- the matrix

pytestmark = pytest.mark.both_backends  # the store tests run on SQLite and PostgreSQL


def test_each_role_holds_the_rights_of_the_lesser_ones() -> None:
    assert RIGHTS["viewer"] == {Right.VIEW}
    assert RIGHTS["annotator"] == {Right.VIEW, Right.LABEL, Right.COMMENT, Right.TAXONOMY}
    assert RIGHTS["launcher"] - RIGHTS["annotator"] == {Right.LAUNCH, Right.CANCEL, Right.DECIDE, Right.RULES}
    assert RIGHTS["admin"] == set(Right)
    for lesser, greater in itertools.pairwise(ROLES):
        assert RIGHTS[lesser] < RIGHTS[greater]


def test_an_actor_is_required_not_a_name(store: Store) -> None:
    with pytest.raises(TypeError, match="Actor"):
        ablation.launch_experiment(store, demo_spec("fast"), actor="alice")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="role"):
        Actor(subject="s", name="n", role="superuser")  # type: ignore[arg-type]
    assert store.list_experiments() == []


# ------------------------------------------------------------- every guarded function


@dataclass
class World:
    """A populated workspace plus a queued demo experiment, a job and a failed train job."""

    store: Store
    pop: Populated
    queued_exp: str
    sleep_job: str
    failed_train: str
    upload: Path


@pytest.fixture
def world(store: Store, tmp_path: Path) -> World:
    pop = populate(store)
    queued = ablation.launch_experiment(store, demo_spec("fast"), actor=ADMIN)
    train = next(j for j in store.list_jobs(experiment_id=queued) if j["kind"] == "train")
    store.finish_job(train["id"], "failed", error="boom")
    sleep = store.enqueue("sleep", {"seconds": 60})
    upload = store.home / "uploads" / "prompts.jsonl"
    upload.parent.mkdir(parents=True, exist_ok=True)
    upload.write_text("".join(json.dumps({"prompt": f"p{i}", "completion": "c"}) + "\n" for i in range(8)))
    sign_in(store, {"sub": "someone", "name": "Someone"})  # the first user: admin
    sign_in(store, {"sub": "other", "name": "Other"})  # then a viewer
    return World(store, pop, queued, sleep, train["id"], upload)


Call = Callable[[World, Actor], Any]
GUARDED: dict[str, tuple[Right, Call]] = {
    "launch an experiment": (
        Right.LAUNCH,
        lambda w, a: ablation.launch_experiment(w.store, demo_spec("fast"), actor=a),
    ),
    "extend an experiment": (
        Right.LAUNCH,
        lambda w, a: ablation.extend_experiment(w.store, w.queued_exp, seeds=[7], actor=a),
    ),
    "cancel a job": (Right.CANCEL, lambda w, a: jobs.cancel_job(w.store, w.sleep_job, actor=a)),
    "cancel an experiment": (
        Right.CANCEL,
        lambda w, a: jobs.cancel_experiment(w.store, w.queued_exp, actor=a),
    ),
    "resume a job": (Right.LAUNCH, lambda w, a: resume_job(w.store, w.failed_train, actor=a)),
    "launch a teacher job": (
        Right.LAUNCH,
        lambda w, a: launch_teacher_job(w.store, demo_spec("fast"), actor=a),
    ),
    "import data": (
        Right.LAUNCH,
        lambda w, a: queue_import(w.store, w.upload, task=TaskSpec(name="t"), test_size=2, actor=a),
    ),
    "upload data": (
        Right.LAUNCH,
        lambda w, a: data_view.save_upload(w.store, "x.jsonl", b'{"prompt": "x"}\n', actor=a),
    ),
    "embed a dataset": (Right.LAUNCH, lambda w, a: embed_job.queue_embed(w.store, w.pop.dataset_id, actor=a)),
    "save a balanced dataset": (
        Right.LAUNCH,
        lambda w, a: diversity.save_balanced_dataset(w.store, w.pop.dataset_id, lambda e: 0, n=0, actor=a),
    ),
    "launch a judge": (
        Right.LAUNCH,
        lambda w, a: judge_job.launch_judge(w.store, {"run_id": w.pop.run_id}, "Is it right?", actor=a),
    ),
    "launch a pairwise judge": (
        Right.LAUNCH,
        lambda w, a: pairwise.launch_pairwise(
            w.store, {"run_id": w.pop.run_id}, pairwise.teacher_side(w.pop.experiment_id), "r", actor=a
        ),
    ),
    "judge runs against the teacher": (
        Right.LAUNCH,
        lambda w, a: pairwise.launch_versus_teacher(w.store, w.pop.experiment_id, actor=a),
    ),
    "train a small judge": (
        Right.LAUNCH,
        lambda w, a: small_flow.launch_training(w.store, "strict", "small-strict", actor=a),
    ),
    "label an answer": (
        Right.LABEL,
        lambda w, a: w.store.add_annotation(w.pop.ref(0), "reject", "other", "no", actor=a),
    ),
    "comment": (Right.COMMENT, lambda w, a: w.store.add_note(w.pop.experiment_id, "looks fine", actor=a)),
    "record a decision": (
        Right.DECIDE,
        lambda w, a: w.store.add_note(w.pop.experiment_id, "collect 2k more", "decision", actor=a),
    ),
    "add an error category": (Right.TAXONOMY, lambda w, a: w.store.add_category("tone", actor=a)),
    "remove an error category": (Right.TAXONOMY, lambda w, a: w.store.remove_category("other", actor=a)),
    "add a rule": (
        Right.RULES,
        lambda w, a: rules_file.add_rule(
            w.store, {"kind": "regex_must_not_match", "name": "no_sorry", "pattern": "sorry"}, actor=a
        ),
    ),
    "remove a rule": (Right.RULES, lambda w, a: rules_file.remove_rule(w.store, "has_fields", actor=a)),
    "set a role": (Right.ADMIN, lambda w, a: set_role(w.store, "other", "annotator", actor=a)),
    "read the audit log": (Right.ADMIN, lambda w, a: w.store.audit_log(actor=a)),
}
# Guarded too; their success (model servers, a teacher endpoint, a W&B upload) is tested elsewhere.
REFUSED_ONLY: dict[str, tuple[Right, Call]] = {
    "try teacher variants": (
        Right.LAUNCH,
        lambda w, a: playground.compare(w.store, [], teacher_view.demo_rows(1), actor=a),
    ),
    "ask models in Compare": (
        Right.LAUNCH,
        lambda w, a: serving_compare.targets_for(w.store, w.pop.experiment_id, w.pop.run_id, "hi", actor=a),
    ),
    "stop model servers": (Right.LAUNCH, lambda w, a: serving_server.stop_all(w.store, actor=a)),
    "embed a small dataset now": (
        Right.LAUNCH,
        lambda w, a: embed_job.embed_now(w.store, w.pop.dataset_id, actor=a),
    ),
    "sync a run to W&B": (
        Right.LAUNCH,
        lambda w, a: wandb_links.sync_offline(
            w.store, wandb_links.WandbRun(w.pop.run_id, "w1", None), actor=a
        ),
    ),
}


TABLES = {
    "sqlite": "SELECT name FROM sqlite_master WHERE type='table'",
    "postgresql": "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()",
}


def _snapshot(store: Store) -> dict[str, Any]:
    """Everything a guarded function could write (the audit log and users aside)."""
    with store.read() as conn:
        tables = [r[0] for r in conn.execute(TABLES[store.db.name])]
        out: dict[str, Any] = {
            t: sorted((tuple(r) for r in conn.execute(f"SELECT * FROM {t}")), key=repr)
            for t in tables
            if t not in ("audit_log", "sqlite_sequence", "schema_version")
        }
    files = [p for p in store.home.rglob("*") if p.is_file() and not p.name.startswith("sensei.db")]
    out["files"] = {str(p.relative_to(store.home)): p.read_bytes() for p in files}
    return out


@pytest.mark.parametrize("action", [*GUARDED, *REFUSED_ONLY])
def test_a_role_lacking_the_right_is_refused_and_nothing_is_done(world: World, action: str) -> None:
    right, call = {**GUARDED, **REFUSED_ONLY}[action]
    below = ROLES[ROLES.index(least_role(right)) - 1]
    actor = person("mallory", below)
    before = _snapshot(world.store)
    with pytest.raises(AccessDenied, match=f"mallory \\({below}\\) may not") as refused:
        call(world, actor)
    assert isinstance(refused.value, PermissionError) and least_role(right) in str(refused.value)
    assert _snapshot(world.store) == before
    (line,) = [r for r in world.store.audit_log(actor=ADMIN) if r["actor_sub"] == actor.subject]
    assert (line["outcome"], line["actor_role"]) == ("refused", below)


@pytest.mark.parametrize("action", list(GUARDED))
def test_the_least_role_with_the_right_may(world: World, action: str) -> None:
    right, call = GUARDED[action]
    role = least_role(right)
    actor = person("olivia", role)
    before = _snapshot(world.store)
    call(world, actor)
    if right is not Right.ADMIN or action == "set a role":
        assert _snapshot(world.store) != before, "nothing was done"
    refused = world.store.audit_log(actor=ADMIN, subject=actor.subject, outcome="refused")
    assert refused == []


def test_launches_and_cancels_record_who_did_them(world: World) -> None:
    lena = person("lena", "launcher")
    exp_id = ablation.launch_experiment(world.store, demo_spec("fast"), actor=lena)
    assert jobs.cancel_experiment(world.store, exp_id, actor=lena) == 3
    job = world.store.list_jobs(experiment_id=exp_id)[0]
    assert job["error"] == "experiment cancelled by lena"
    mine = world.store.audit_log(actor=ADMIN, subject=lena.subject)
    assert [(r["action"], r["actor_name"]) for r in mine][-1] == ("launch", "lena")
    assert {r["action"] for r in mine} == {"launch", "cancel"}
    assert next(r for r in mine if r["action"] == "launch")["target"] == exp_id


# ------------------------------------------------------------------- labels, by person


def test_one_current_label_per_person_editable_with_history(store: Store) -> None:
    ann = person("ann")
    renamed = Actor(subject=ann.subject, name="Ann B.", role="annotator")  # same person, new name
    namesake = Actor(subject="sub-other-ann", name="ann", role="annotator")  # another person
    store.add_annotation("run:r:1", "accept", actor=ann)
    store.add_annotation("run:r:1", "reject", "other", "on second thought", actor=renamed)
    store.add_annotation("run:r:1", "accept", actor=namesake)
    current = store.annotations(item_ref="run:r:1")
    assert [(a["annotator_sub"], a["annotator"], a["label"]) for a in current] == [
        (ann.subject, "Ann B.", "reject"),
        ("sub-other-ann", "ann", "accept"),
    ]
    mine = [a["label"] for a in store.annotation_history("run:r:1") if a["annotator_sub"] == ann.subject]
    assert mine == ["accept", "reject"]
    assert len(store.annotations(annotator_sub=ann.subject, current_only=False)) == 2


def test_notes_record_subject_and_name(world: World) -> None:
    ann = person("ann")
    world.store.add_note(world.pop.experiment_id, "fine by me", actor=ann)
    (note,) = world.store.list_notes(world.pop.experiment_id)
    assert (note["author"], note["author_sub"], note["kind"]) == ("ann", ann.subject, "comment")


# ---------------------------------------------------------------------------- sign-in


def test_the_first_user_of_a_workspace_becomes_admin_and_later_ones_viewers(store: Store) -> None:
    first = sign_in(store, {"sub": "u1", "name": "First", "email": "first@example.com"})
    second = sign_in(store, {"sub": "u2", "email": "second@example.com"})
    assert (first.role, first.name, first.email) == ("admin", "First", "first@example.com")
    assert (second.role, second.name) == ("viewer", "second@example.com")  # name falls back to e-mail
    assert sign_in(store, {"sub": "u1", "name": "First"}).role == "admin"  # kept, not re-decided
    assert {u["subject"]: u["role_source"] for u in store.list_users()} == {
        "u1": "first user",
        "u2": "default",
    }
    firsts = store.audit_log(actor=ADMIN, action="first sign-in")
    assert [(r["actor_sub"], r["detail"]["role"]) for r in firsts] == [("u2", "viewer"), ("u1", "admin")]


def test_local_mode_leaves_the_workspace_empty_for_a_first_signed_in_admin(store: Store) -> None:
    store.add_category("tone", actor=local_admin())  # months of local single-user work
    assert store.list_users() == []
    assert sign_in(store, {"sub": "u1"}).role == "admin"


def test_without_a_sub_claim_nobody_signs_in(store: Store) -> None:
    with pytest.raises(ValueError, match="sub"):
        sign_in(store, {"name": "Anonymous", "email": "a@example.com"})
    assert store.list_users() == []


def _roles_file(store: Store, text: str) -> None:
    (store.home / "roles.toml").write_text(text, encoding="utf-8")


def test_roles_from_a_claim_string_or_list_highest_wins(store: Store) -> None:
    _roles_file(store, 'roles_claim = "groups"\n')
    assert sign_in(store, {"sub": "a", "groups": "annotator"}).role == "annotator"  # not first-user admin
    assert sign_in(store, {"sub": "b", "groups": ["staff", "Launcher", "viewer"]}).role == "launcher"
    assert sign_in(store, {"sub": "c", "groups": ["staff"]}).role == "viewer"  # nothing known: default
    assert sign_in(store, {"sub": "a", "groups": "admin"}).role == "admin"  # the provider changed it
    changed = store.audit_log(actor=ADMIN, subject="a", action="role from claim groups")
    assert [r["detail"]["role"] for r in changed] == ["admin"]


def test_roles_from_the_roles_file_by_subject_or_email(store: Store) -> None:
    _roles_file(
        store,
        'default_role = "annotator"\n[users]\n"lead@example.com" = "admin"\n"sub-42" = "launcher"\n',
    )
    # The file names an admin, so the first user to sign in is not made one.
    assert sign_in(store, {"sub": "x1", "email": "new@example.com"}).role == "annotator"
    assert sign_in(store, {"sub": "x2", "email": "LEAD@example.com"}).role == "admin"
    assert sign_in(store, {"sub": "sub-42"}).role == "launcher"
    assert store.get_user("sub-42")["role_source"] == "roles.toml"


def test_the_claim_beats_the_file_and_the_file_beats_an_admin(store: Store) -> None:
    boss = sign_in(store, {"sub": "boss"})
    sign_in(store, {"sub": "kim", "email": "kim@example.com"})
    set_role(store, "kim", "launcher", actor=boss)
    assert sign_in(store, {"sub": "kim", "email": "kim@example.com"}).role == "launcher"
    _roles_file(store, 'roles_claim = "role"\n[users]\n"kim@example.com" = "annotator"\n')
    assert sign_in(store, {"sub": "kim", "email": "kim@example.com"}).role == "annotator"
    with pytest.raises(ValueError, match=r"comes from the roles\.toml"):
        set_role(store, "kim", "admin", actor=boss)
    kim = sign_in(store, {"sub": "kim", "email": "kim@example.com", "role": "viewer"})
    assert kim.role == "viewer"
    with pytest.raises(ValueError, match="comes from the claim role"):
        set_role(store, "kim", "admin", actor=boss)


def test_an_admin_sets_roles_but_not_away_from_the_last_admin(store: Store) -> None:
    boss = sign_in(store, {"sub": "boss", "name": "Boss"})
    sign_in(store, {"sub": "kim"})
    with pytest.raises(ValueError, match="last admin"):
        set_role(store, "boss", "viewer", actor=boss)
    set_role(store, "kim", "admin", actor=boss)
    set_role(store, "boss", "viewer", actor=boss)
    assert sign_in(store, {"sub": "boss"}).role == "viewer"
    with pytest.raises(ValueError, match="nobody"):
        set_role(store, "ghost", "viewer", actor=local_admin())
    (line,) = store.audit_log(actor=ADMIN, action="set role", subject="boss", outcome="done")[-1:]
    assert line["detail"] == {"role": "admin", "was": "viewer"} and line["target"] == "kim"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("roles_claim = [", "not valid TOML"),
        ('[users]\n"a@b.c" = "owner"\n', "users.a@b.c"),
        ('defualt_role = "viewer"\n', "defualt_role"),
    ],
)
def test_a_broken_roles_file_lets_nobody_in(store: Store, text: str, problem: str) -> None:
    _roles_file(store, text)
    with pytest.raises(RolesFileError, match=problem):
        sign_in(store, {"sub": "u1"})
    assert store.list_users() == []


def test_the_local_user_is_an_admin_named_after_the_server_account(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENSEI_LOCAL_USER", "tess")
    me = local_admin()
    assert (me.subject, me.name, me.role, me.local) == ("local:tess", "tess", "admin", True)
