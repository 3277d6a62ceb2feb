"""Review and annotation engine: labels with history, concurrency, filters, diff, export, calibration."""

from __future__ import annotations

import html
import json
import multiprocessing
import re
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from engine.judges import report as cr
from engine.judges.calibration import calibrate, compare_judges
from engine.review import items as review
from engine.store import MIGRATIONS, SCHEMA_VERSION, Store
from engine.ui import review as review_view
from tests.actors import person
from tests.review_data import MISTAKES, N, populate, write_labels

pytestmark = pytest.mark.both_backends  # the store tests run on SQLite and PostgreSQL


# --------------------------------------------------------------------------- store
def test_a_workspace_from_before_annotations_is_upgraded(tmp_path: Path) -> None:
    db = tmp_path / "ws" / "sensei.db"
    db.parent.mkdir()
    conn = sqlite3.connect(db)
    conn.executescript(MIGRATIONS[0][1] + "; PRAGMA user_version=1;")
    conn.close()
    store = Store(tmp_path / "ws")
    assert store.schema_version() == SCHEMA_VERSION >= 2
    assert [c["name"] for c in store.list_categories()] == [
        "wrong field value",
        "invalid format",
        "extra prose",
        "hallucination",
        "other",
    ]


def test_latest_label_per_annotator_wins_and_history_is_kept(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = iter([100.0, 90.0, 80.0, 70.0])  # a clock going backwards must not reorder labels
    monkeypatch.setattr(time, "time", lambda: next(clock))
    store.add_annotation("run:r:1", "accept", actor=person("ada"))
    store.add_annotation("run:r:1", "reject", "extra prose", "chatty", actor=person("bob"))
    store.add_annotation("run:r:1", "reject", "wrong field value", "  urgency  ", actor=person("ada"))
    store.add_annotation("run:r:2", "accept", actor=person("ada"))
    current = store.annotations(item_ref="run:r:1")
    assert [(a["annotator"], a["label"], a["note"]) for a in current] == [
        ("bob", "reject", "chatty"),
        ("ada", "reject", "urgency"),
    ]
    assert [a["label"] for a in store.annotation_history("run:r:1")] == ["accept", "reject", "reject"]
    assert len(store.annotations(annotator="ada")) == 2
    assert len(store.annotations(prefix="run:r:")) == 3
    assert store.annotations(prefix="run:r:1") == current
    assert store.annotations(prefix="run:x:") == []


def test_bad_labels_are_refused(store: Store) -> None:
    with pytest.raises(TypeError, match=r"engine\.access\.Actor"):  # a bare name is nobody
        store.add_annotation("run:r:1", "accept", actor="ada")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not one of accept, reject"):
        store.add_annotation("run:r:1", "maybe", actor=person("ada"))
    assert store.annotations(current_only=False) == []


@pytest.mark.parametrize("how", ["threads", "processes"])
def test_two_annotators_at_once_lose_nothing(store: Store, how: str) -> None:
    home, n = str(store.home), 200
    ctx = multiprocessing.get_context("spawn")
    start = threading.Barrier(2) if how == "threads" else ctx.Barrier(2)  # both begin writing together
    args = [(home, who, n, start) for who in ("ada", "bob")]
    if how == "threads":
        workers: list = [threading.Thread(target=write_labels, args=a) for a in args]
    else:
        workers = [ctx.Process(target=write_labels, args=a) for a in args]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    if how == "processes":
        assert [w.exitcode for w in workers] == [0, 0]
    history = store.annotations(current_only=False)
    assert len(history) == 2 * n
    for who in ("ada", "bob"):
        mine = [a for a in history if a["annotator"] == who]
        assert sorted(int(a["note"]) for a in mine) == list(range(n))
        # Each item's current label is the one this annotator wrote last for it (i % 10 == item).
        for a in store.annotations(annotator=who):
            item = int(a["item_ref"].rsplit(":", 1)[1])
            last = max(i for i in range(n) if i % 10 == item)
            assert (a["note"], a["label"]) == (str(last), "accept" if last % 2 else "reject")
    assert len(store.annotations()) == 20
    spans = [[a["ts"] for a in history if a["annotator"] == who] for who in ("ada", "bob")]
    assert max(map(min, spans)) < min(map(max, spans)), "the two writers did not overlap in time"


def test_error_categories_are_editable(store: Store) -> None:
    assert store.add_category("  policy   violation ", "mentions a competitor", actor=person("ada"))
    assert not store.add_category("   ", actor=person("ada"))
    assert store.add_category("other", "say what in the note", actor=person("ada"))  # updates the description
    names = {c["name"]: c["description"] for c in store.list_categories()}
    assert names["policy violation"] == "mentions a competitor" and names["other"] == "say what in the note"
    store.add_annotation("run:r:1", "reject", "policy violation", actor=person("ada"))
    assert store.remove_category("policy violation", actor=person("ada")) and not store.remove_category(
        "policy violation", actor=person("ada")
    )
    assert store.annotations()[0]["category"] == "policy violation"  # labels keep it


def test_judge_verdicts_are_upserted(store: Store) -> None:
    store.save_judge_verdicts("j", [{"item_ref": "run:r:1", "verdict": "accept", "reason": "ok"}])
    store.save_judge_verdicts("j", [{"item_ref": "run:r:1", "verdict": "reject", "raw": "{}"}])
    store.save_judge_verdicts("k", [{"item_ref": "teacher:d:t:1", "verdict": "error"}])
    (row,) = store.list_judge_verdicts("j")
    assert (row["verdict"], row["reason"], row["raw"]) == ("reject", "", "{}")
    assert store.judge_names() == ["j", "k"]
    assert [v["judge_name"] for v in store.list_judge_verdicts(prefix="run:")] == ["j"]


# --------------------------------------------------------------------------- items
def test_items_join_outputs_teacher_rules_judges_and_labels(store: Store) -> None:
    pop = populate(store)
    rules, error = review.load_workspace_rules(store.home)
    assert error is None and [r.name for r in rules] == ["starts_with_brace", "has_fields"]
    items = review.build_items(store, pop.run_id, rules)
    assert [it.idx for it in items] == [100 + i for i in range(N)]
    first, prose, broken = items[0], items[4], items[6]
    assert first.ref == pop.ref(0) and first.teacher == first.reference == first.student
    assert prose.teacher is not None and prose.teacher.startswith("Sure!")
    assert prose.rejected_rules == ["starts_with_brace", "has_fields"]  # prose is not a JSON object
    assert broken.rejected_rules == ["has_fields"]
    assert [it.failed for it in items] == [i in MISTAKES for i in range(N)]
    assert set(first.judges) == {"strict", "lenient"} and first.judges["strict"]["verdict"] == "accept"
    assert {a["annotator"] for a in first.labels} == {"ada", "bob"}
    assert review.build_items(store, "run-missing") == []


def test_broken_rules_file_is_reported_not_raised(tmp_path: Path) -> None:
    assert review.load_workspace_rules(tmp_path) == ([], None)
    (tmp_path / review.RULES_FILE).write_text("- {kind: nope, name: x}\n")
    rules, error = review.load_workspace_rules(tmp_path)
    assert rules == [] and error and "rules.yaml" in error


def test_sme_consensus_majority_and_ties_reject() -> None:
    def lab(i: int, label: str) -> dict:
        return {"id": i, "label": label, "category": None}

    assert review.sme_consensus([]) is None
    assert review.sme_consensus([lab(1, "accept"), lab(2, "accept"), lab(3, "reject")])["id"] == 2
    assert review.sme_consensus([lab(1, "reject"), lab(2, "accept")])["label"] == "reject"


def test_filters(store: Store) -> None:
    pop = populate(store)
    rules, _ = review.load_workspace_rules(store.home)
    items = review.build_items(store, pop.run_id, rules)

    def idx(**kw: object) -> list[int]:
        return [it.idx - 100 for it in review.filter_items(items, review.ReviewFilter(**kw))]  # type: ignore[arg-type]

    assert idx() == list(range(N))
    assert idx(failed_only=True) == sorted(MISTAKES)
    assert idx(rule="starts_with_brace") == [4, 10]
    assert idx(rule="has_fields") == [4, 6, 10]
    assert idx(judge="lenient", verdict="unparsable") == [2]
    assert idx(verdict="unparsable") == [2]
    assert idx(judge="strict", verdict="accept", failed_only=True) == [9]
    # SMEs (majority, tie -> reject) vs lenient: #2 unparsable, #4 and #10 prose accepted.
    assert idx(judge="lenient", disagreement=True) == [2, 4, 10]
    assert idx(judge="strict", disagreement=True) == [9]
    assert idx(disagreement=True) == [2, 4, 9, 10]
    store.add_annotation(pop.ref(3), "accept", actor=person("tess"))
    items = review.build_items(store, pop.run_id, rules)
    assert len(review.filter_items(items, review.ReviewFilter(unlabelled_by=person("tess").subject))) == N - 1


# ---------------------------------------------------------------------- diff, view
def test_token_diff_segments_rebuild_both_texts_word_by_word() -> None:
    old, new = "The order ships on Monday.", "The order shipped on Monday, sorry."
    segments = review.token_diff(old, new)
    assert "".join(t for op, t in segments if op != "insert") == old
    assert "".join(t for op, t in segments if op != "delete") == new
    assert ("delete", "ships") in segments and ("insert", "shipped") in segments  # whole words
    assert review.token_diff("same", "same") == [("equal", "same")]


def test_json_answers_diff_per_field() -> None:
    old = '{"intent": "refund", "urgency": "high", "customer": {"name": "Ann"}, "note": 1}'
    new = '{"intent": "cancel", "urgency": "high", "customer": {"name": "Bo"}, "extra": null}'
    changes = {c.field: (c.status, c.old, c.new) for c in review.field_diff(old, new) or []}
    assert changes == {
        "intent": ("changed", '"refund"', '"cancel"'),
        "urgency": ("same", '"high"', '"high"'),
        "customer.name": ("changed", '"Ann"', '"Bo"'),
        "note": ("missing", "1", None),
        "extra": ("added", None, "null"),
    }
    out = review.diff_html(old, new)
    text = html.unescape(re.sub(r"<[^>]+>", "", out))
    assert 'intent: "refund" → "cancel"' in text and "rcancefundl" not in text
    assert "1 field equal: urgency" in text and "note: 1 (missing)" in text
    assert review.field_diff("[1]", '{"a": 1}') is None and review.field_diff("not json", "{}") is None
    same = html.unescape(re.sub(r"<[^>]+>", "", review.diff_html('{"a": 1}', '{ "a" : 1 }')))
    assert "only the formatting differs" in same


def test_diff_html_escapes_user_text() -> None:
    out = review.diff_html("<b>a</b> & b", "<script>alert(1)</script> & b")
    assert "<script" not in out and "<b>" not in out and "</b>" not in out
    assert "&lt;" in out and "&gt;" in out and "&amp;" in out
    text = html.unescape(re.sub(r"<[^>]+>", "", out))  # what the reader sees, in diff order
    assert text == "".join(t for _, t in review.token_diff("<b>a</b> & b", "<script>alert(1)</script> & b"))
    assert 'class="diff-insert"' in out and 'class="diff-delete"' in out
    fields = review.diff_html('{"<k>": "<v>"}', '{"<k>": "<w>"}')
    assert "<k>" not in fields and "<v>" not in fields and "&lt;k&gt;" in fields


def test_view_tables_and_markdown_escaping(store: Store) -> None:
    pop = populate(store)
    rules, _ = review.load_workspace_rules(store.home)
    items = review.build_items(store, pop.run_id, rules)
    frame = review_view.items_frame(items, person("ada").subject)
    assert len(frame) == N and {"judge: strict", "judge: lenient", "exact_match"} <= set(frame.columns)
    assert frame.loc[0, "SMEs"] == "2 accept" and frame.loc[4, "SMEs"] == "1 accept · 1 reject"
    assert (
        frame.loc[4, "you"] == "reject" and frame.loc[4, "rules rejecting"] == "starts_with_brace, has_fields"
    )
    checks = review_view.checks_frame(items[4])
    assert list(checks["check"]).count("judge") == 2 and "reject" in list(checks["result"])
    line = review_view.label_line(
        {
            "annotator": "[x](http://evil)",
            "label": "reject",
            "category": "a*b",
            "note": "<img src=x>",
            "ts": time.time(),
        }
    )
    assert "\\[x\\](http" in line and "a\\*b" in line and "note" not in line


def test_notes_render_as_markdown_without_backslashes() -> None:
    note = "**urgency** is wrong:\n\n- expected `high`\n- see ticket #12. Costs $5, not $50"
    md = review_view.note_markdown(note)
    assert md.splitlines()[0] == "> **urgency** is wrong:" and "> - expected `high`" in md
    assert md.replace("\\$", "$").count("\\") == 0  # only the dollars, which Streamlit would read as math
    assert review_view.note_markdown("![x](http://tracker/p.png)") == "> [x](http://tracker/p.png)"
    assert review_view.md_escape("jean-luc d. (ops)") == "jean-luc d. (ops)"


# -------------------------------------------------------------------------- export
def test_export_jsonl_current_or_full_history(store: Store) -> None:
    pop = populate(store)
    items = review.build_items(store, pop.run_id)
    store.add_annotation(pop.ref(0), "reject", "other", "changed my mind", actor=person("ada"))
    lines = [
        json.loads(x)
        for x in review.annotations_jsonl(store, review.run_prefix(pop.run_id), items=items).splitlines()
    ]
    assert len(lines) == N + 2  # ada's 12 current labels + bob's 2
    first = next(x for x in lines if x["item_ref"] == pop.ref(0) and x["annotator"] == "ada")
    assert (first["label"], first["note"], first["run_id"], first["idx"]) == (
        "reject",
        "changed my mind",
        pop.run_id,
        100,
    )
    assert first["prompt"].startswith("Extract") and first["teacher"] == first["reference"]
    assert first["annotator_sub"] == person("ada").subject  # who, not only a name
    allowed = {
        "item_ref",
        "annotator",
        "annotator_sub",
        "label",
        "category",
        "note",
        "ts",
        "run_id",
        "idx",
        "prompt",
        "output",
        "reference",
        "teacher",
    }
    assert all(set(x) <= allowed for x in lines)
    history = review.annotations_jsonl(store, history=True).splitlines()
    assert len(history) == N + 3


# --------------------------------------------------------------------- calibration
def test_calibration_pairs_sme_labels_with_stored_verdicts(store: Store) -> None:
    pop = populate(store)
    assert cr.pointwise_judges(store) == ["lenient", "strict"]
    cset = cr.calibration_set(store, ["lenient"])
    assert cset.refs == [pop.ref(i) for i in range(N)]
    expected_sme = ["reject" if i in MISTAKES or i == 4 else "accept" for i in range(N)]
    assert cset.labels == expected_sme
    cal = cr.judge_calibration(cset, "lenient", n_boot=200)
    verdicts = [v["verdict"] for v in cset.verdicts["lenient"]]
    direct = calibrate(expected_sme, verdicts, cset.categories, n_boot=200)
    assert cal == direct and cal.unparsable == 1
    assert [d["idx"] for d in cr.disagreements(cset, "lenient")] == [102, 104, 110]
    assert cr.metrics_frame(cal)["metric"].tolist() == ["agreement", "kappa", "precision", "recall", "f1"]
    assert "extra prose" in set(cr.category_frame(cal)["category"])
    assert len(cr.confusion_figure(cal).data) == 2

    both = cr.calibration_set(store, ["lenient", "strict"])
    cmp = cr.judge_comparison(both, "lenient", "strict", n_boot=200)
    strict = [v["verdict"] for v in both.verdicts["strict"]]
    assert cmp == compare_judges(both.labels, verdicts, strict, both.categories, n_boot=200)
    assert "strict − lenient" in cr.comparison_frame(cmp, "lenient", "strict").columns


def test_calibration_only_counts_items_with_both_sides(store: Store) -> None:
    pop = populate(store)
    bob = cr.calibration_set(store, ["strict"], annotator="bob")
    assert bob.refs == [pop.ref(0), pop.ref(4)] and bob.labels == ["accept", "accept"]
    store.save_judge_verdicts("pairwise", [{"item_ref": pop.ref(0), "verdict": "A"}])
    assert "pairwise" not in cr.pointwise_judges(store)
    store.save_judge_verdicts("late", [{"item_ref": "run:other:1", "verdict": "accept"}])
    empty = cr.calibration_set(store, ["late"])
    assert empty.refs == [] and cr.judge_calibration(empty, "late") is None
    assert cr.calibration_set(store, ["strict"], prefix="run:other:").refs == []
