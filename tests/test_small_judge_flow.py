"""A small judge learnt from a workspace judge's verdicts and SME labels, then judging a run."""

from __future__ import annotations

from pathlib import Path

import pytest

from engine.context import JobContext
from engine.jobs import _resolve
from engine.judges import report as cr
from engine.judges.small import flow
from engine.specs import SpecError
from engine.store import Store
from tests.actors import ADMIN
from tests.review_data import N, populate
from tests.test_pages import app
from tests.test_small_judge import tiny_encoder  # noqa: F401  (a module-scoped fixture)


def _run(store: Store, job_id: str) -> None:
    job = store.get_job(job_id)
    assert job is not None
    _resolve(job["kind"])(JobContext(store=store, job=job, spec=job["spec"]))


def test_items_are_what_the_judge_saw_with_sme_labels_beside(store: Store) -> None:
    pop = populate(store)
    items = flow.training_items(store, "strict")
    assert len({it["id"] for it in items}) == N
    labels = {(it["id"], it["source"]): it["label"] for it in items}
    # Answer 9 has a wrong field the strict judge missed; the SMEs rejected it.
    assert labels[(pop.ref(9), "judge")] == "accept" and labels[(pop.ref(9), "sme")] == "reject"
    output = next(o["output"] for o in store.list_outputs(pop.run_id) if o["idx"] == 109)
    text = next(it["text"] for it in items if it["id"] == pop.ref(9))
    assert f"<answer>\n{output}\n</answer>" in text and "<reference>" not in text
    with_ref = flow.training_items(store, "strict", use_reference=True)
    assert all("<reference>" in it["text"] for it in with_ref)


def test_refusals_name_the_problem(store: Store) -> None:
    pop = populate(store, labels=False)
    with pytest.raises(SpecError, match="'strict' is taken by a judge"):
        flow.launch_training(store, "strict", "strict", actor=ADMIN)
    with pytest.raises(SpecError, match="'lenient' is taken"):  # its verdicts would be overwritten
        flow.launch_training(store, "strict", "lenient", actor=ADMIN)
    with pytest.raises(SpecError, match="use letters, digits"):
        flow.launch_training(store, "strict", "small\n", actor=ADMIN)
    with pytest.raises(SpecError, match="use letters, digits"):
        flow.launch_training(store, "strict", "../escape", actor=ADMIN)
    with pytest.raises(SpecError, match="epochs"):
        flow.launch_training(store, "strict", "s", epochs=0, actor=ADMIN)
    with pytest.raises(ValueError, match="give 0 accepted and 0 rejected answers"):
        flow.launch_training(store, "nobody", "small", actor=ADMIN)
    with pytest.raises(ValueError, match="no trained small judge named 'ghost'"):
        flow.launch_run(store, "ghost", {"run_id": pop.run_id}, actor=ADMIN)
    assert not any(j["kind"] == "small_judge" for j in store.list_jobs())  # nothing queued


def test_train_a_small_judge_then_calibrate_it(store: Store, tiny_encoder: Path) -> None:  # noqa: F811
    pop = populate(store)
    job_id = flow.launch_training(
        store,
        "strict",
        "small-strict",
        encoder=str(tiny_encoder),
        epochs=1,
        lr=1e-3,
        max_length=64,
        actor=ADMIN,
    )
    _run(store, job_id)
    (trained,) = flow.trained_small_judges(store)
    assert trained["name"] == "small-strict" and trained["from_judge"] == "strict"
    (row,) = flow.summary_rows([trained])
    assert row["answers"] == N and 0 <= row["held-out accuracy"] <= 1 and row["$ / 1,000 verdicts"] > 0

    _run(store, flow.launch_run(store, "small-strict", {"run_id": pop.run_id}, actor=ADMIN))
    verdicts = store.list_judge_verdicts("small-strict")
    assert len(verdicts) == N and {v["verdict"] for v in verdicts} <= {"accept", "reject"}
    assert all(v["reason"].startswith("small-strict: P(accept)=") for v in verdicts)
    # Calibrated like any judge, on the same answers as the big judge it learnt from.
    assert "small-strict" in cr.pointwise_judges(store)
    # ...but only on answers it did not learn from (SME labels of its training answers are out).
    fitted = flow.calibration_exclusions(store, ["small-strict", "strict"])
    assert 0 < len(fitted) < N and fitted == flow.trained_on(store, "small-strict")
    cset = cr.calibration_set(store, ["small-strict", "strict"], exclude=fitted)
    assert len(cset.refs) == N - len(fitted) and not set(cset.refs) & fitted
    assert cr.judge_comparison(cset, "strict", "small-strict", n_boot=50)
    with pytest.raises(SpecError, match="'small-strict' is taken"):  # no retraining over a live model
        flow.launch_training(store, "strict", "small-strict", encoder=str(tiny_encoder), actor=ADMIN)

    at = app("views/calibration.py")
    table = next(d.value for d in at.dataframe if "small judge" in d.value.columns)
    assert list(table["small judge"]) == ["small-strict"] and list(table["learnt from"]) == ["strict"]
    at.selectbox(key="sj_from").set_value("lenient").run()
    assert at.text_input(key="sj_name_lenient").value == "small-lenient"  # follows the source
    at.button(key="sj_train").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("Queued small-judge training" in s.value for s in at.success), [s.value for s in at.success]
    names = [j["spec"]["small_judge"]["name"] for j in store.list_jobs() if j["kind"] == "small_judge"]
    assert sorted(names) == ["small-lenient", "small-strict"]  # the first ran in-process above
