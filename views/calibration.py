"""Judge calibration: how far an LLM judge agrees with the SMEs, and which of two judges to trust."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import streamlit as st

from engine import jobs
from engine.access import Right
from engine.judges import job as judge_job
from engine.judges import pairwise as pairwise_job
from engine.judges import report as cr
from engine.judges.calibration import Calibration
from engine.judges.small import flow as small_judge_flow
from engine.review import items as review
from engine.store import Store
from engine.teacher.keys import key_choices, key_label
from engine.ui import common as ui
from engine.ui import review as review_view
from engine.words import plural, plural_word

st.title("Judge calibration")
st.write(
    "Check how far to trust an LLM judge: its verdicts against the SMEs' labels on the same "
    "answers, with bootstrap confidence intervals, and which answers they disagree on; then let a "
    "small judge take over, or pit a student against its teacher head to head."
)

ALL_RUNS = "all"
CONSENSUS = ""
N_BOOT = 1000

store = Store()
actor = st.session_state["actor"]
may_launch = actor.can(Right.LAUNCH)
judges = cr.pointwise_judges(store)
labels = store.annotations()


def _queue(launch: Callable[[], str], done: str) -> None:
    """Queue a job with ``launch`` and say so (``done`` names ``{job_id}``), or say why not."""
    try:
        job_id = launch()
    except ValueError as err:  # SpecError and RuleError are ValueErrors too
        st.error(f"Not queued: {err}")
        return
    if ui.autostart_enabled():
        jobs.ensure_scheduler(store)
    st.success(done.format(job_id=job_id))


def run_judge_control() -> None:
    """Queue a ``judge`` job: pick the answers, name the judge, write the rubric, pick a model."""
    targets = judge_job.target_options(store)
    if not targets:
        st.caption("Nothing to judge yet: run an experiment first.")
        return
    if not may_launch:
        st.caption(ui.role_note(actor, Right.LAUNCH, "run judges"))
        return
    pick = st.selectbox("Answers to judge", list(targets), format_func=targets.__getitem__, key="jr_target")
    name = st.text_input("Judge name", value="judge", key="jr_name")
    rubric = st.text_area("Rubric", key="jr_rubric", placeholder="One criterion a line.")
    use_ref = st.checkbox("Show the reference answer to the judge", key="jr_ref")
    own = st.toggle("Another endpoint than the experiment's teacher", key="jr_own")
    if own:
        c1, c2, c3 = st.columns(3)
        c1.text_input("Base URL", key="jr_url", placeholder="http://localhost:8000/v1")
        c2.text_input("Model", key="jr_model")
        c3.selectbox(
            "API key variable",
            key_choices(),
            key="jr_key",
            format_func=key_label,
            help="A key name the server's admin declared in SENSEI_KEY_ENVS; never the key.",
        )
    if not st.button("Run judge", key="jr_run", type="primary"):
        return

    def launch() -> str:
        endpoint = (
            judge_job.endpoint_from_form(
                st.session_state.jr_url, st.session_state.jr_model, st.session_state.jr_key
            )
            if own
            else None
        )
        target = judge_job.target_of(pick)
        return judge_job.launch_judge(store, target, rubric, name, endpoint, use_ref, actor=actor)

    _queue(launch, "Queued judge job {job_id}; its verdicts appear here when it finishes (see Runs).")


with st.expander("Run a judge", expanded=not judges, icon=":material/gavel:"):
    run_judge_control()


def small_judge_control() -> None:
    """Train a small judge on a judge's verdicts (and SME labels), and let a trained one judge."""
    big = [j for j in judges if j not in {t["name"] for t in trained}]
    if not big:
        st.caption("A small judge learns from an LLM judge's verdicts: run a judge first.")
    elif not may_launch:
        st.caption(ui.role_note(actor, Right.LAUNCH, "train or run small judges"))
    else:
        c1, c2, c3 = st.columns([2, 2, 1], vertical_alignment="bottom")
        source = c1.selectbox("Learn from", big, key="sj_from", help="SME labels override its verdicts.")
        # Keyed on the source, so picking another judge to learn from also renames the default.
        name = c2.text_input("Small judge name", value=f"small-{source}", key=f"sj_name_{source}")
        if c3.button("Train", key="sj_train", icon=":material/model_training:"):
            _queue(
                lambda: small_judge_flow.launch_training(store, source, name, actor=actor),
                "Queued small-judge training {job_id} (a minute or two on a CPU).",
            )
    if not trained:
        return
    st.dataframe(
        small_judge_flow.summary_rows(trained),
        hide_index=True,
        column_config={
            c: st.column_config.NumberColumn(format="%.3f")
            for c in ("held-out accuracy", "majority baseline", "kappa")
        }
        | {
            c: st.column_config.NumberColumn(format="$%.5f")
            for c in ("$ / 1,000 verdicts", "big judge $ / 1,000")
        },
        placeholder="",
    )
    targets = judge_job.target_options(store)
    if not targets or not may_launch:
        return
    c1, c2, c3 = st.columns([2, 2, 1], vertical_alignment="bottom")
    who = c1.selectbox("Small judge", [t["name"] for t in trained], key="sj_run_name")
    pick = c2.selectbox("Answers to judge", list(targets), format_func=targets.__getitem__, key="sj_target")
    if c3.button("Judge", key="sj_run", icon=":material/gavel:"):
        _queue(
            lambda: small_judge_flow.launch_run(store, who, judge_job.target_of(pick), actor=actor),
            f"Queued {who} on those answers ({{job_id}}); calibrate it here when it finishes.",
        )


trained = small_judge_flow.trained_small_judges(store)
with st.expander("Small judge: the trusted judge's verdicts, for pennies", icon=":material/savings:"):
    small_judge_control()


def head_to_head_control() -> None:
    """Queue a pairwise comparison of two answer sets, and show every comparison's win rate."""
    targets = judge_job.target_options(store)
    if len(targets) < 2:
        st.caption("Two answer sets are needed (a run and its teacher, or two runs): run an experiment.")
    elif not may_launch:
        st.caption(ui.role_note(actor, Right.LAUNCH, "queue head-to-head comparisons"))
    else:
        keys = list(targets)
        c1, c2 = st.columns(2)
        a = c1.selectbox("A", keys, format_func=targets.__getitem__, key="hh_a")
        teacher = next(
            (i for i, k in enumerate(keys) if judge_job.target_of(k).get("teacher")), len(keys) - 1
        )
        b = c2.selectbox("B", keys, index=teacher, format_func=targets.__getitem__, key="hh_b")
        c1, c2 = st.columns([1, 2])
        name = c1.text_input("Judge name", value="pairwise", key="hh_name")
        rubric = c2.text_input("Rubric", key="hh_rubric", placeholder="What makes one answer better.")
        use_ref = st.checkbox("Show the reference answer to the judge", key="hh_ref")
        if st.button("Compare", key="hh_run", icon=":material/compare_arrows:"):
            _queue(
                lambda: pairwise_job.launch_pairwise(
                    store,
                    judge_job.target_of(a),
                    judge_job.target_of(b),
                    rubric,
                    name,
                    use_reference=use_ref,
                    actor=actor,
                ),
                "Queued head-to-head {job_id}: each pair is asked in both orders.",
            )
    rows = pairwise_job.head_to_head(store)
    if rows:
        st.dataframe(
            pairwise_job.head_to_head_frame(store, rows),
            hide_index=True,
            column_config={
                "B score": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0, format="%.2f")
            },
            placeholder="",
        )
        st.caption(
            "B score = (B wins + ties / 2) / decided pairs; 0.5 means as good as A. A pair whose two "
            "orders disagree counts as a tie (position bias)."
        )


with st.expander("Head to head: is the student as good as the teacher?", icon=":material/compare_arrows:"):
    head_to_head_control()

if not judges or not labels:
    st.info(
        "Calibration needs two things on the same answers: **SME labels** — give them on the "
        "Review page — and **judge verdicts**, which a judge run saves to the workspace. "
        f"So far: {plural(len(labels), 'SME label')}, {plural(len(judges), 'judge')} with verdicts."
    )
    st.page_link("views/review.py", label="Label answers on Review", icon=":material/rate_review:")
    st.stop()


def _open_row(key: str, refs: list[str | None]) -> None:
    """Remember the picked answer and start a fresh table, so coming back finds no selection."""
    rows = st.session_state[key].selection.rows
    if rows and refs[rows[0]]:
        st.session_state["cal_open"] = refs[rows[0]]
        st.session_state["cal_picks"] = st.session_state.get("cal_picks", 0) + 1


def metric_row(cal: Calibration) -> None:
    cols = st.columns(6)
    cols[0].metric("Answers", cal.n, help="Labelled by the SMEs and judged by every judge shown.")
    names = {
        "agreement": "Agreement",
        "kappa": "Cohen's κ",
        "precision": "Precision (accept)",
        "recall": "Recall (accept)",
        "f1": "F1 (accept)",
    }
    for col, (metric, name) in zip(cols[1:], names.items(), strict=True):
        value = getattr(cal, metric)
        col.metric(name, "—" if value is None else f"{value:.2f}")
        col.caption(f"95% CI {cr.format_ci(cal.ci.get(metric))}")
    if cal.unparsable or cal.errors:
        st.caption(
            f"{cal.unparsable} unparsable and {cal.errors} failed judge replies count as *not accept*."
        )


runs = {r["id"]: r["label"] for r in review.reviewable_runs(store)}
annotators = sorted({a["annotator"] for a in labels})
c1, c2, c3, c4 = st.columns(4)
judge = c1.selectbox("Judge", judges, key="cal_judge")
other = c2.selectbox(
    "Compare with",
    [j for j in judges if j != judge],
    index=None,
    key="cal_other",
    placeholder="another judge" if len(judges) > 1 else "only one judge so far",
)
scope = c3.selectbox(
    "Answers",
    [ALL_RUNS, *runs],
    key="cal_scope",
    format_func=lambda r: "all labelled answers" if r == ALL_RUNS else runs[r],
)
who = c4.selectbox(
    "SME labels",
    [CONSENSUS, *annotators],
    key="cal_who",
    format_func=lambda a: a or "majority of all annotators",
    help="Several annotators on one answer: the majority label counts, a tie counts as reject.",
)

prefix = None if scope == ALL_RUNS else review.run_prefix(scope)
shown = [judge, *([other] if other else [])]
fitted = small_judge_flow.calibration_exclusions(store, shown)
cset = cr.calibration_set(store, shown, prefix, who or None, exclude=fitted)
if fitted:
    st.caption(
        f"{plural(len(fitted), 'answer')} a small judge here was trained on "
        f"{plural_word(len(fitted), 'is', 'are')} left out: a judge agrees with "
        "the labels it was fitted to."
    )
cal = cr.judge_calibration(cset, judge, n_boot=N_BOOT)
if cal is None:
    both = f"both {judge} and {other}" if other else judge
    st.info(
        f"No answer here has both an SME label and a verdict from {both}. Label answers that "
        "the judge has seen on the Review page (filter by judge there)."
    )
    st.page_link("views/review.py", label="Review", icon=":material/rate_review:")
    st.stop()

st.subheader(judge)
metric_row(cal)
matrix, cats = st.columns([2, 3], gap="large")
with matrix:
    st.markdown("**Confusion matrix** (accept is the positive class)")
    st.plotly_chart(cr.confusion_figure(cal), key="confusion")
with cats:
    st.markdown("**By SME error category**")
    st.dataframe(
        cr.category_frame(cal),
        hide_index=True,
        column_config={
            "n": st.column_config.NumberColumn(width="small"),
            "unparsable": st.column_config.NumberColumn(width="small"),
            "agreement": st.column_config.NumberColumn(format="%.2f"),
            "judge_accept_rate": st.column_config.NumberColumn("judge accepts", format="%.2f"),
            "missed": st.column_config.NumberColumn(
                width="small", help="SME rejected, judge accepted: the costly mistake."
            ),
            "false_rejects": st.column_config.NumberColumn("false rejects", width="small"),
        },
        placeholder="",
    )

rows = cr.disagreements(cset, judge)
st.subheader(f"Disagreements ({len(rows)})")
if not rows:
    st.caption("The judge agrees with the SMEs on every answer here.")
else:
    refs = [r["item_ref"] if review.source_of(r["item_ref"]) else None for r in rows]  # runs' and teachers'
    for r, ref in zip(rows, refs, strict=True):
        r["open"] = review_view.review_link(ref) if ref else None
    key = f"cal_disagreements_{st.session_state.get('cal_picks', 0)}"
    st.dataframe(
        rows,
        hide_index=True,
        on_select=partial(_open_row, key, refs),
        selection_mode="single-row",
        key=key,
        column_order=["open", "idx", "sme", "category", "sme_note", "judge", "judge_reason", "item_ref"],
        column_config={
            "open": st.column_config.LinkColumn("new tab", display_text="Open ↗", width="small"),
            "idx": st.column_config.NumberColumn("#", width="small"),
            "sme": "SME",
            "sme_note": "SME note",
            "judge_reason": st.column_config.TextColumn("judge's reason", width="large"),
        },
        placeholder="",
    )
    st.caption("Select a row to open that answer on Review.")
    if ref := st.session_state.pop("cal_open", None):
        st.switch_page("views/review.py", query_params={"item": ref})

if other:
    cmp = cr.judge_comparison(cset, judge, other, n_boot=N_BOOT)
    assert cmp is not None  # the set is the one calibrated above
    st.subheader(f"{judge} vs {other} on the same {plural(len(cset.refs), 'answer')}")
    st.dataframe(
        cr.comparison_frame(cmp, judge, other),
        hide_index=True,
        column_config={
            c: st.column_config.NumberColumn(format="%.3f") for c in (judge, other, f"{other} − {judge}")
        },
        placeholder="",
    )
    kappa = "—" if cmp.judges_kappa is None else f"{cmp.judges_kappa:.2f}"
    st.caption(
        f"The two judges agree on {cmp.judges_agreement:.0%} of these answers (κ {kappa}). A "
        "difference whose interval excludes 0 is more than resampling noise (paired bootstrap)."
    )
    left, right = st.columns(2)
    left.plotly_chart(cr.confusion_figure(cmp.a, judge), key="confusion_a")
    right.plotly_chart(cr.confusion_figure(cmp.b, other), key="confusion_b")
