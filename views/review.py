"""Review: read a run's (or the teacher's) answers one at a time or as a table, and label them."""

from __future__ import annotations

from functools import partial

import streamlit as st

from engine.access import Right
from engine.review import items as review
from engine.store import Store
from engine.ui import common as ui
from engine.ui import review as review_view
from engine.words import plural

st.title("Review")
st.write(
    "Read the student's answers next to the reference and the teacher's, see why each metric, "
    "rule and judge passed or failed them, and give your own verdict. The teacher's own answers "
    "are here too: one you reject is not trained on."
)

VIEWS = ("One at a time", "Table")
VERDICTS = ("accept", "reject", "unparsable", "error")
FILTER_DEFAULTS = {
    "rv_failed": False,
    "rv_rule": None,
    "rv_judge": None,
    "rv_verdict": None,
    "rv_disagree": False,
    "rv_todo": False,
}
PAGE_SIZE = 25

store = Store()
home = str(store.home)
actor = st.session_state["actor"]
me = actor.subject  # labels are one person's (subject's), whatever their display name
may_label = actor.can(Right.LABEL)


# ---------------------------------------------------------------------- callbacks
def _go(ref: str) -> None:
    st.session_state["review_ref"] = ref


def _save(ref: str, idx: int, label: str, next_ref: str | None) -> None:
    """Append the label (the store keeps every earlier one), then move on if asked."""
    category = st.session_state.get(f"cat|{ref}") or None
    note = st.session_state.get(f"note|{ref}") or ""
    Store(home).add_annotation(ref, label, category, note, actor=st.session_state["actor"])
    st.session_state["review_flash"] = f"Saved **{label}** for example #{idx}."
    if next_ref and st.session_state.get("review_advance", True):
        st.session_state["review_ref"] = next_ref


def _pick_row(key: str, refs: list[str]) -> None:
    rows = st.session_state[key].selection.rows
    if rows:
        st.session_state["review_ref"] = refs[rows[0]]
        st.session_state["review_view"] = VIEWS[0]


def _add_category() -> None:
    if Store(home).add_category(
        st.session_state.get("new_cat", ""),
        st.session_state.get("new_cat_desc", ""),
        actor=st.session_state["actor"],
    ):
        st.session_state["new_cat"] = st.session_state["new_cat_desc"] = ""


def _remove_category() -> None:
    if name := st.session_state.get("drop_cat"):
        Store(home).remove_category(name, actor=st.session_state["actor"])


# --------------------------------------------------------------------------- views
def _text(title: str, text: str | None, missing: str) -> None:
    st.markdown(f"**{title}**")
    if text is None:
        st.caption(missing)
    else:
        st.code(text or " ", language=None, wrap_lines=True)


def one_at_a_time(shown: list[review.ReviewItem], categories: list[str]) -> None:
    refs = [it.ref for it in shown]
    pos = refs.index(st.session_state["review_ref"])
    item = shown[pos]
    prev_ref = refs[pos - 1] if pos > 0 else None
    next_ref = refs[pos + 1] if pos + 1 < len(refs) else None

    with st.container(horizontal=True, vertical_alignment="center"):
        st.markdown(f"**Answer {pos + 1} of {len(shown)}** · example #{item.idx}")
        st.space("stretch")
        st.button(
            "Previous",
            icon=":material/arrow_back:",
            shortcut="P",
            disabled=prev_ref is None,
            on_click=_go,
            args=(prev_ref,),
            key="rv_prev",
        )
        st.button(
            "Next",
            icon=":material/arrow_forward:",
            shortcut="N",
            disabled=next_ref is None,
            on_click=_go,
            args=(next_ref,),
            key="rv_next",
        )

    texts, side = st.columns([3, 2], gap="large")
    whose = item.answer_of  # "student" or "teacher"
    with texts:
        _text("Prompt", item.prompt, "")
        _text(f"{whose.capitalize()}'s answer", item.student, "")
        _text("Reference", item.reference, "No reference for this example.")
        if whose == "student":
            _text("Teacher's answer", item.teacher, "No teacher answer stored for this example.")
        if item.base is not None:
            _text("Base model's answer", item.base, "")
        against = {
            k: v for k, v in (("reference", item.reference), ("teacher", item.teacher)) if v is not None
        }
        if against:
            other = st.radio(
                f"Diff the {whose}'s answer against", list(against), horizontal=True, key="rv_diff"
            )
            other = other if other in against else next(iter(against))
            if against[other] == item.student:
                st.caption(f"The {whose}'s answer is identical to the {other}.")
            else:
                st.html(review.diff_html(against[other], item.student))
                st.caption(
                    f":red[struck out]: in the {other} only · :green[**bold**]: in the {whose}'s answer only"
                )
        st.markdown("**Metrics, rules and judges**")
        st.dataframe(
            review_view.checks_frame(item),
            hide_index=True,
            column_config={"reason": st.column_config.TextColumn(width="large")},
            placeholder="",
        )

    with side:
        mine = item.label_of(me)
        options = ["", *categories]
        if mine and mine["category"] and mine["category"] not in options:
            options.append(mine["category"])  # removed from the taxonomy since, still shown
        if may_label:
            with st.form("annotate"):
                st.markdown(f"**Your verdict** (as {review_view.md_escape(actor.name)})")
                st.selectbox(
                    "Error category",
                    options,
                    key=f"cat|{item.ref}",
                    index=options.index(mine["category"] or "") if mine else 0,
                    format_func=lambda c: c or "(none)",
                )
                st.text_area("Note", value=mine["note"] if mine else "", key=f"note|{item.ref}", height=90)
                accept, reject = st.columns(2)
                for col, label, key in ((accept, "accept", "A"), (reject, "reject", "X")):
                    col.form_submit_button(
                        label.capitalize(),
                        shortcut=key,
                        width="stretch",
                        type="primary" if mine and mine["label"] == label else "secondary",
                        on_click=_save,
                        args=(item.ref, item.idx, label, next_ref),
                        key=f"rv_{label}",
                    )
            st.checkbox("Go to the next answer after saving", value=True, key="review_advance")
            st.caption(
                "Keys: **A** accept · **X** reject · **N** next · **P** previous (outside text fields)."
            )
        else:
            st.info(ui.role_note(actor, Right.LABEL, "label answers"), icon=":material/visibility:")
        st.markdown("**SME labels**")
        for label in item.labels:
            st.markdown(review_view.label_line(label))
            if label.get("note"):
                st.markdown(review_view.note_markdown(label["note"]))
        if not item.labels:
            st.caption("Nobody has labelled this answer yet.")
        with st.expander("History of this answer's labels"):
            st.dataframe(
                review_view.history_frame(store.annotation_history(item.ref)), hide_index=True, placeholder=""
            )


def table(shown: list[review.ReviewItem]) -> None:
    pages = max(1, -(-len(shown) // PAGE_SIZE))
    page = 1
    if pages > 1:
        page = int(st.number_input("Page", min_value=1, max_value=pages, value=1, key="rv_page", width=160))
    chunk = shown[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    frame = review_view.items_frame(chunk, me)
    key = f"rv_table_{page}"
    st.dataframe(
        frame,
        hide_index=True,
        height=38 + 35 * len(chunk),  # the whole page of rows, no inner scrolling
        on_select=partial(_pick_row, key, [it.ref for it in chunk]),
        selection_mode="single-row",
        key=key,
        column_config={
            "failed": st.column_config.CheckboxColumn(width="small"),
            "rules rejecting": st.column_config.TextColumn(width="medium"),
            "student": st.column_config.TextColumn(f"{chunk[0].answer_of}'s answer", width="large"),
            **{m: st.column_config.NumberColumn(format="%.2f") for m in review_view.metric_columns(chunk)},
        },
        placeholder="",
    )
    st.caption(f"Page {page} of {pages} · select a row to open it one at a time.")


def taxonomy() -> None:
    with st.expander("Error categories (shared by everyone in this workspace)"):
        cats = store.list_categories()
        st.dataframe(cats, column_order=["name", "description"], hide_index=True, placeholder="")
        if not actor.can(Right.TAXONOMY):
            st.caption(ui.role_note(actor, Right.TAXONOMY, "change the categories"))
            return
        with st.container(horizontal=True, vertical_alignment="bottom"):
            st.text_input("New category", key="new_cat")
            st.text_input("Description", key="new_cat_desc")
            st.button("Add", on_click=_add_category, key="add_cat")
        with st.container(horizontal=True, vertical_alignment="bottom"):
            st.selectbox("Category", [c["name"] for c in cats], key="drop_cat")
            st.button(
                "Remove",
                on_click=_remove_category,
                key="remove_cat",
                help="Labels that already use it keep it.",
            )


# ---------------------------------------------------------------------------- page
sources = review.review_sources(store)
if not sources:
    st.info(
        "Nothing to review yet: answers show up here once a training run has been evaluated "
        "on the test split. Run an experiment first — **Run the demo** on Overview, or "
        "configure one on Launch."
    )
    st.page_link("views/overview.py", label="Overview", icon=":material/home:")
    st.page_link("views/launch.py", label="Launch", icon=":material/rocket_launch:")
    st.stop()

source_ids = [r["id"] for r in sources]  # run ids, then teacher answer sets
# A link (Calibration's disagreements, Ablation's gold-vs-teacher list, or a reload) names the
# item in the URL: open it, with the filters cleared so it is surely shown.
url_item = st.query_params.get("item")
if url_item and url_item != st.session_state.get("review_url_item"):
    st.session_state["review_url_item"] = url_item
    source = review.source_of(url_item)
    if source in source_ids:
        st.session_state.update(FILTER_DEFAULTS, review_run=source, review_ref=url_item)
if st.session_state.get("review_run") not in source_ids:
    st.session_state.pop("review_run", None)

labels = {r["id"]: review_view.run_choice(r) for r in sources}
pick, export = st.columns([4, 1], vertical_alignment="bottom")
run_id = pick.selectbox("Answers", source_ids, format_func=labels.__getitem__, key="review_run")
rules, rules_error = review.load_workspace_rules(store.home)
if rules_error:
    st.warning(f"Rules not applied: {rules_error}")
items = review.build_items(store, run_id, rules)
with export.popover("Export labels", icon=":material/download:", width="stretch"):
    for history in (False, True):
        st.download_button(
            "Full history (JSONL)" if history else "Current labels (JSONL)",
            review.annotations_jsonl(store, review.source_prefix(run_id), history=history, items=items),
            file_name=f"labels-{run_id.strip(':').replace(':', '-')}{'-history' if history else ''}.jsonl",
            mime="application/jsonl",
            on_click="ignore",
            key=f"export_{history}",
        )

judges = sorted({j for it in items for j in it.judges})
for key, default in FILTER_DEFAULTS.items():
    st.session_state.setdefault(key, default)
with st.container(border=True):
    row1 = st.columns(3)
    row1[0].selectbox(
        "Rejected by rule",
        [r.name for r in rules],
        index=None,
        key="rv_rule",
        placeholder="any rule" if rules else f"no rules in {review.RULES_FILE}",
    )
    row1[1].selectbox(
        "Judge",
        judges,
        index=None,
        key="rv_judge",
        placeholder="any judge" if judges else "no judge verdicts yet",
    )
    row1[2].selectbox("Judge verdict", VERDICTS, index=None, key="rv_verdict", placeholder="any verdict")
    row2 = st.columns(3)
    row2[0].toggle("Failed only", key="rv_failed", help="Not an exact match, or rejected by a rule.")
    row2[1].toggle("Judge and SMEs disagree", key="rv_disagree")
    row2[2].toggle("Not labelled by me", key="rv_todo", disabled=not may_label)

flt = review.ReviewFilter(
    failed_only=st.session_state["rv_failed"],
    rule=st.session_state["rv_rule"],
    judge=st.session_state["rv_judge"],
    verdict=st.session_state["rv_verdict"],
    disagreement=st.session_state["rv_disagree"],
    unlabelled_by=me if st.session_state["rv_todo"] and may_label else None,
)
shown = review.filter_items(items, flt)
mine = sum(bool(it.label_of(me)) for it in items)
st.caption(
    f"{len(shown)} of {plural(len(items), 'answer')} shown · {sum(it.failed for it in items)} failed · "
    f"{sum(bool(it.labels) for it in items)} labelled by someone · {mine} by you"
)
if flash := st.session_state.pop("review_flash", None):
    st.success(flash, icon=":material/check:")

if not shown:
    st.info("No answer matches these filters.")
else:
    if st.session_state.get("review_ref") not in {it.ref for it in shown}:
        st.session_state["review_ref"] = shown[0].ref
    # The URL names the open item, so a reload (or a shared link) comes back to it.
    st.query_params["item"] = st.session_state["review_url_item"] = st.session_state["review_ref"]
    st.session_state.setdefault("review_view", VIEWS[0])
    view = st.segmented_control("View", VIEWS, required=True, key="review_view")
    if view == VIEWS[1]:
        table(shown)
    else:
        one_at_a_time(shown, [c["name"] for c in store.list_categories()])
taxonomy()
