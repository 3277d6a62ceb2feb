"""Review and Judge calibration pages through AppTest, empty and populated (no browser)."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from engine.store import Store
from tests.actors import person
from tests.review_data import N, Populated, populate
from tests.test_pages import APP, app, sign_in_as, texts

REVIEW, CALIBRATION = "views/review.py", "views/calibration.py"


@pytest.fixture
def populated(store: Store) -> Populated:
    return populate(store)


def as_annotator(at: AppTest, name: str, role: str = "annotator") -> AppTest:
    """Run signed in as ``name`` (subject ``sub-<name>``, as ``tests.actors.person``) with ``role``."""
    return sign_in_as(at, name, role).run()


def caption_with(at: AppTest, start: str) -> str:
    return next(c.value for c in at.caption if c.value.startswith(start))


# ------------------------------------------------------------------------------ empty
def test_review_empty_says_to_run_an_experiment_first() -> None:
    at = app(REVIEW)
    assert "Run an experiment first" in texts(at)
    assert not at.dataframe and not at.get("button_group")


def test_calibration_empty_says_what_it_needs(store: Store) -> None:
    at = app(CALIBRATION)
    assert "Calibration needs two things" in texts(at)
    assert "0 SME labels, 0 judges" in texts(at)
    store.add_annotation("run:r:1", "accept", actor=person("ada"))  # labels alone are not enough
    at = app(CALIBRATION)
    assert "1 SME label, 0 judges" in texts(at) and not at.get("plotly_chart")


# -------------------------------------------------------------------------- populated
def test_review_shows_one_answer_with_everything_known_about_it(populated: Populated) -> None:
    at = as_annotator(app(REVIEW), "tess")
    text = texts(at)
    assert "**Answer 1 of 12** · example #100" in text
    assert "12 of 12 answers shown · 5 failed · 12 labelled by someone · 0 by you" in text
    codes = [c.value for c in at.code]
    assert (
        codes[0].startswith("Extract the ticket fields") and len(codes) == 4
    )  # prompt, student, ref, teacher
    checks = at.dataframe[0].value
    assert set(checks["check"]) == {"metric", "rule", "judge"}
    assert set(checks.loc[checks["check"] == "judge", "name"]) == {"strict", "lenient"}
    assert "**ada** — accept" in text and "**bob** — accept" in text
    assert "Your verdict** (as tess)" in text
    assert not at.warning


def test_review_labels_an_answer_and_moves_on(populated: Populated, store: Store) -> None:
    at = as_annotator(app(REVIEW), "tess")
    ref = populated.ref(0)
    at.selectbox(key=f"cat|{ref}").set_value("wrong field value")
    at.text_area(key=f"note|{ref}").set_value("urgency is wrong")
    at.button(key="rv_reject").click()
    as_annotator(at, "tess")
    assert not at.exception
    (label,) = store.annotations(annotator="tess")
    assert (label["item_ref"], label["label"], label["category"], label["note"]) == (
        ref,
        "reject",
        "wrong field value",
        "urgency is wrong",
    )
    assert "Saved **reject** for example #100." in at.success[0].value
    assert "**Answer 2 of 12** · example #101" in texts(at)
    at.button(key="rv_prev").click()
    as_annotator(at, "tess")
    assert "**tess** — reject · wrong field value · just now" in texts(at)
    assert "> urgency is wrong" in texts(at)
    assert at.selectbox(key=f"cat|{ref}").value == "wrong field value"
    at.button(key="rv_accept").click()  # changing one's mind appends, history kept
    as_annotator(at, "tess")
    assert [a["label"] for a in store.annotation_history(ref) if a["annotator"] == "tess"] == [
        "reject",
        "accept",
    ]
    assert store.annotations(item_ref=ref, annotator="tess")[0]["label"] == "accept"


def test_a_viewer_reads_the_labels_but_cannot_label(populated: Populated, store: Store) -> None:
    at = as_annotator(app(REVIEW), "vic", "viewer")
    assert not at.exception
    assert "Your role (viewer) cannot label answers: that takes the annotator role" in at.info[0].value
    assert "**ada** — accept" in texts(at)  # everyone's labels stay visible
    assert not {"rv_accept", "rv_reject", "add_cat", "remove_cat"} & {b.key for b in at.button}
    assert at.toggle(key="rv_todo").disabled
    assert "**vic** · viewer" in texts(at)
    (vic,) = [u for u in store.list_users() if u["subject"] == "sub-vic"]
    assert (vic["role"], vic["role_source"]) == ("viewer", "claim sensei_role")


def test_review_filters(populated: Populated) -> None:
    at = as_annotator(app(REVIEW), "ada")
    at.toggle(key="rv_failed").set_value(True)
    as_annotator(at, "ada")
    assert caption_with(at, "5 of 12 answers shown")
    at.toggle(key="rv_failed").set_value(False)
    at.selectbox(key="rv_rule").set_value("starts_with_brace")
    as_annotator(at, "ada")
    assert caption_with(at, "2 of 12 answers shown") and "example #104" in texts(at)
    at.selectbox(key="rv_rule").set_value(None)
    at.selectbox(key="rv_judge").set_value("lenient")
    at.selectbox(key="rv_verdict").set_value("unparsable")
    as_annotator(at, "ada")
    assert caption_with(at, "1 of 12 answers shown") and "example #102" in texts(at)
    at.selectbox(key="rv_verdict").set_value(None)
    at.toggle(key="rv_disagree").set_value(True)
    as_annotator(at, "ada")
    assert caption_with(at, "3 of 12 answers shown")
    at.toggle(key="rv_todo").set_value(True)  # ada labelled everything
    as_annotator(at, "ada")
    assert "No answer matches these filters." in texts(at)


def test_review_opens_the_item_named_in_the_url(populated: Populated) -> None:
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["item"] = populated.ref(6)  # as a link from Calibration, or a reload, has it
    at.run()
    at.switch_page(REVIEW).run()
    assert "**Answer 7 of 12** · example #106" in texts(at)
    assert at.query_params["item"] == populated.ref(6)


def test_review_table_view(populated: Populated) -> None:
    at = as_annotator(app(REVIEW), "ada")
    at.button_group(key="review_view").set_value("Table")
    as_annotator(at, "ada")
    table = at.dataframe[0].value
    assert len(table) == N and list(table["#"]) == [100 + i for i in range(N)]
    assert {"you", "SMEs", "judge: strict", "student", "exact_match"} <= set(table.columns)
    assert caption_with(at, "Page 1 of 1")


def test_review_error_categories_are_editable(populated: Populated, store: Store) -> None:
    at = as_annotator(app(REVIEW), "ada")
    at.text_input(key="new_cat").set_value("policy violation")
    at.text_input(key="new_cat_desc").set_value("mentions a competitor")
    at.button(key="add_cat").click()
    as_annotator(at, "ada")
    assert "policy violation" in [c["name"] for c in store.list_categories()]
    assert "policy violation" in at.selectbox(key=f"cat|{populated.ref(0)}").options
    at.selectbox(key="drop_cat").set_value("hallucination")
    at.button(key="remove_cat").click()
    as_annotator(at, "ada")
    assert "hallucination" not in [c["name"] for c in store.list_categories()]


def test_calibration_shows_agreement_with_intervals(populated: Populated) -> None:
    at = app(CALIBRATION)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Answers"] == "12" and metrics["Agreement"] == "0.75" and metrics["Cohen's κ"] == "0.47"
    assert sum(c.value.startswith("95% CI [") for c in at.caption) == 5
    assert "1 unparsable and 0 failed judge replies count as *not accept*." in texts(at)
    assert len(at.get("plotly_chart")) == 1
    categories = at.dataframe[0].value
    assert set(categories["category"]) == {"(none)", "extra prose", "invalid format", "wrong field value"}
    disagreements = at.dataframe[1].value
    assert list(disagreements["idx"]) == [102, 104, 110]
    assert disagreements["open"][0] == f"review?item=run%3A{populated.run_id}%3A102"


def test_calibration_compares_two_judges_and_one_annotator(populated: Populated) -> None:
    at = app(CALIBRATION)
    at.selectbox(key="cal_other").set_value("strict").run()
    assert "lenient vs strict on the same 12 answers" in [s.value for s in at.subheader]
    comparison = at.dataframe[2].value
    assert list(comparison.columns[:3]) == ["metric", "lenient", "strict"]
    assert "strict − lenient" in comparison.columns
    assert len(at.get("plotly_chart")) == 3
    at.selectbox(key="cal_who").set_value("bob").run()
    assert {m.label: m.value for m in at.metric}["Answers"] == "2"


def test_review_run_picker_counts_each_runs_labels(populated: Populated, store: Store) -> None:
    newer = populate(store, labels=False, judges=False)  # opens first: it is the newest run
    at = as_annotator(app(REVIEW), "ada")
    assert at.selectbox(key="review_run").value == newer.run_id
    options = at.selectbox(key="review_run").options
    assert any(o.endswith(f"{newer.run_id} · 12 answers · 0 labelled") for o in options), options
    assert any(o.endswith(f"{populated.run_id} · 12 answers · 12 labelled") for o in options), options


def test_review_note_with_markdown_is_rendered_not_escaped(populated: Populated, store: Store) -> None:
    store.add_annotation(
        populated.ref(0), "reject", note="**urgency** is wrong. See #12 - ticket", actor=person("bob")
    )
    at = as_annotator(app(REVIEW), "tess")
    assert "> **urgency** is wrong. See #12 - ticket" in [m.value for m in at.markdown]
    assert not any("\\" in m.value for m in at.markdown if "urgency" in m.value)


def test_review_diffs_json_answers_per_field(populated: Populated) -> None:
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["item"] = populated.ref(1)  # a wrong urgency
    at.run()
    at.switch_page(REVIEW).run()
    (diff,) = at.get("html")
    body = diff.proto.body
    assert "sensei-diff-fields" in body and "urgency" in body and "→" in body
    assert "fields equal: intent, product, order_id" in body


def _blank_missing(at: AppTest) -> None:
    """Every table leaves missing values blank: no "None" placeholder, no "None"/"nan" text."""
    assert at.dataframe
    for df in at.dataframe:
        assert df.proto.HasField("placeholder") and df.proto.placeholder == "", df.value.columns
        printed = [v for v in df.value.to_numpy().ravel() if isinstance(v, str) and v in ("None", "nan")]
        assert not printed, df.value


@pytest.mark.parametrize("page", [REVIEW, CALIBRATION, "views/data.py", "views/runs.py"])
def test_tables_show_missing_values_as_blank(populated: Populated, page: str) -> None:
    at = as_annotator(app(page), "ada")
    _blank_missing(at)
    if page == REVIEW:
        at.button_group(key="review_view").set_value("Table")
        _blank_missing(as_annotator(at, "ada"))
