"""Gold vs teacher on the pages (AppTest): the Ablation page lists the training examples where
the teacher's answer differs from the gold one, each linked to Review, which opens and labels it."""

from __future__ import annotations

from urllib.parse import quote

from streamlit.testing.v1 import AppTest

from engine import ablation
from engine.review import items as review
from engine.store import Store
from tests.actors import ADMIN, person
from tests.gold_data import gold_experiment
from tests.test_pages import APP, app, sign_in_as, texts

ABLATION, REVIEW = "views/ablation.py", "views/review.py"


def test_the_ablation_page_lists_where_teacher_and_gold_disagree(store: Store) -> None:
    case = gold_experiment(store)
    at = app(ABLATION)
    assert "The teacher's answer differs from the gold answer on 4 of 14 training examples" in texts(at)
    frame = next(d.value for d in at.dataframe if "differs in" in d.value.columns)
    assert list(frame["#"])[:2] == [2, 5] and sorted(frame["#"]) == [2, 5, 7, 9]
    assert list(frame["differs in"])[:2] == ["not a JSON object", "fields: product, urgency"]
    assert frame["open"].iloc[0] == f"review?item={quote(case.ref(2), safe='')}"


def test_an_experiment_that_only_trains_on_gold_says_no_teacher_was_asked(store: Store) -> None:
    case = gold_experiment(store, vary={})
    spec = case.spec.model_copy(deep=True)
    spec.student.recipe = "gold"
    ablation.launch_experiment(store, spec, actor=ADMIN)  # the newest: the page opens on it
    at = app(ABLATION)
    assert "trains on the gold answers: no teacher was asked" in texts(at)
    assert not any("differs in" in d.value.columns for d in at.dataframe)


def test_review_opens_a_teachers_answer_from_its_link_and_labels_it(store: Store) -> None:
    case = gold_experiment(store)
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["item"] = case.ref(7)  # the Ablation page's link
    sign_in_as(at, "ada").run()
    at.switch_page(REVIEW).run()
    assert not at.exception, [e.value for e in at.exception]
    text = texts(at)
    assert "example #7" in text and "**Teacher's answer**" in text
    assert "No teacher answer stored" not in text and "**Student's answer**" not in text
    assert at.selectbox(key="review_run").value == review.source_of(case.ref(7))
    checks = next(d.value for d in at.dataframe if "check" in d.value.columns)
    row = checks[checks["name"] == "field_accuracy"].iloc[0]
    assert row["result"] == "0.750"
    sign_in_as(at, "ada")
    at.button(key="rv_reject").click()
    sign_in_as(at, "ada").run()
    (label,) = store.annotations(annotator="ada")
    assert (label["item_ref"], label["label"]) == (case.ref(7), "reject")


def test_calibration_links_a_teachers_answer_to_review(store: Store) -> None:
    case = gold_experiment(store)
    store.add_annotation(case.ref(7), "reject", "wrong field value", actor=person("ada"))
    store.add_annotation(case.ref(0), "accept", actor=person("ada"))
    verdicts = [("accept", 7), ("accept", 0)]  # the judge misses #7's wrong urgency
    store.save_judge_verdicts(
        "strict", [{"item_ref": case.ref(i), "verdict": v, "reason": "ok", "raw": "{}"} for v, i in verdicts]
    )
    at = app("views/calibration.py")
    disagreements = next(d.value for d in at.dataframe if "judge_reason" in d.value.columns)
    assert list(disagreements["item_ref"]) == [case.ref(7)]
    assert disagreements["open"][0] == f"review?item={quote(case.ref(7), safe='')}"
