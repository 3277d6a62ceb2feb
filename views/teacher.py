"""Teacher: try endpoints and prompts on a few rows, compare two variants, launch and watch jobs."""

from __future__ import annotations

from typing import Any

import streamlit as st

from engine.access import Right
from engine.specs import ExperimentSpec, SpecError, demo_spec
from engine.store import Store
from engine.teacher.client import MissingApiKeyError
from engine.teacher.keys import KEY_ENVS_VAR, declared_key_envs
from engine.teacher.playground import (
    MAX_ROWS,
    Variant,
    answer_caption,
    compare,
    launch_teacher_job,
    variant_labels,
)
from engine.ui import common as ui_common
from engine.ui import teacher as tv
from engine.words import plural

st.title("Teacher")
st.write(
    "Get the teacher right before paying for a whole dataset: try an endpoint and prompt on a few "
    "rows, compare two variants side by side, then launch the teacher job and watch its cost and ETA."
)

store = Store()
actor = st.session_state["actor"]
may_launch = actor.can(Right.LAUNCH)
base = demo_spec("standard")


def _secret(name: str) -> str | None:
    """A key from Streamlit secrets — read here, handed to the call, never stored or shown."""
    try:
        value = st.secrets.get(name)
    except Exception:  # no secrets.toml at all
        return None
    return str(value) if value else None


# ------------------------------------------------------------------------------- rows
st.subheader("Rows to try")
datasets = tv.dataset_choices(store)
sources = (["Stored dataset"] if datasets else []) + ["Demo examples", "Type my own"]
source = st.radio("Rows from", sources, horizontal=True, key="tp.source")
dataset_size = base.data.demo_examples
if not datasets:
    st.caption("No dataset in this workspace yet: try the demo examples or type your own inputs.")
if source == "Stored dataset":
    ds_id = st.selectbox("Dataset", list(datasets), format_func=datasets.__getitem__, key="tp.dataset")
    pool = tv.dataset_rows(store, ds_id)
    if task := tv.dataset_task(store, ds_id):
        base = base.model_copy(update={"task": task})
    ds = store.get_dataset(ds_id) or {}
    dataset_size = int(ds.get("n_train", 0)) + int(ds.get("n_test", 0)) or dataset_size
elif source == "Demo examples":
    pool = tv.demo_rows(20)
else:
    text = st.text_area("Inputs, one per line", key="tp.typed", placeholder="Hi, my order 123 never arrived…")
    pool = tv.typed_rows(text or "")
if source == "Type my own":
    rows = pool[:MAX_ROWS]
    if len(pool) > MAX_ROWS:
        st.caption(f"Only the first {MAX_ROWS} lines are tried.")
else:
    labels = {r["idx"]: tv.row_label(r) for r in pool}
    picked = st.multiselect(
        f"Rows (at most {MAX_ROWS})",
        list(labels),
        default=list(labels)[:3],
        max_selections=MAX_ROWS,
        format_func=labels.__getitem__,
        key=f"tp.rows.{source}",
    )
    rows = [r for r in pool if r["idx"] in picked]


# --------------------------------------------------------------------------- variants
def variant_form(label: str, defaults: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Draw one variant's endpoint and prompt fields; returns (form values, key source)."""
    k = f"tp.{label}."
    for key, value in defaults.items():
        st.session_state.setdefault(k + key, value)
    kind = st.selectbox(
        "Kind",
        tv.KINDS,
        key=k + "teacher.kind",
        help="demo: simulated; openai: any "
        "OpenAI-compatible endpoint; local: a Hugging Face model run by the worker.",
    )
    st.text_input(
        "Base URL",
        key=k + "teacher.base_url",
        placeholder="http://localhost:8000/v1",
        disabled=kind != "openai",
    )
    st.text_input(
        "Model",
        key=k + "teacher.model",
        help="For local: a Hub id, or a folder under the workspace or a model root (SENSEI_MODEL_ROOTS).",
    )
    name_col, src_col = st.columns([3, 2])
    name = name_col.selectbox(
        "API key",
        tv.key_choices(st.session_state.get(k + "teacher.api_key_env")),
        key=k + "teacher.api_key_env",
        format_func=tv.key_label,
        help=f"A key name the server's admin declared in {KEY_ENVS_VAR}; the key itself is never shown.",
    )
    key_source = src_col.radio("Key from", ["environment", "Streamlit secrets"], key=k + "key_source")
    if not declared_key_envs():
        st.caption(
            f"No API key names are declared on this server: an admin lists them in `{KEY_ENVS_VAR}` "
            "(see the README)."
        )
    if key_source == "environment":
        st.caption(f"Key variable: **{tv.key_status(name or None)}** in this process.")
    elif name in declared_key_envs():
        found = _secret(name) is not None
        st.caption(
            f"Streamlit secret: **{'found' if found else 'not found'}** (used by the playground only)."
        )
    st.text_area("System prompt", key=k + "task.system_prompt", height=90)
    st.text_area("Prompt template", key=k + "task.prompt_template", height=90, help="Must contain {input}.")
    c1, c2 = st.columns(2)
    c1.number_input("Temperature", 0.0, 2.0, step=0.1, key=k + "teacher.temperature")
    c2.number_input("Max tokens", 1, 32768, key=k + "teacher.max_tokens")
    with st.expander("Limits, prices, local model"):
        c1, c2 = st.columns(2)
        c1.number_input("Concurrency", 1, 1024, key=k + "teacher.concurrency")
        c2.number_input("Demo error rate", 0.0, 1.0, step=0.05, key=k + "teacher.demo_error_rate")
        c1.number_input("Requests / min (0: none)", 0, key=k + "teacher.requests_per_minute")
        c2.number_input("Tokens / min (0: none)", 0, key=k + "teacher.tokens_per_minute")
        c1.number_input("$ / 1M input tokens", 0.0, step=0.1, key=k + "teacher.price_input_per_m")
        c2.number_input("$ / 1M output tokens", 0.0, step=0.1, key=k + "teacher.price_output_per_m")
        st.text_input("Revision (local Hub models)", key=k + "teacher.revision", placeholder="main")
    return {f: st.session_state[k + f] for f in tv.VARIANT_FIELDS}, key_source


st.subheader("Variants")
with_b = st.toggle("Compare with a second variant (B)", key="tp.with_b")
cols = st.columns(2 if with_b else 1, gap="large")
forms: dict[str, tuple[dict[str, Any], str]] = {}
for label, col in zip(["A", "B"] if with_b else ["A"], cols, strict=True):
    with col:
        st.markdown(f"**Variant {label}**")
        forms[label] = variant_form(label, tv.variant_defaults(base))


def build(label: str) -> ExperimentSpec:
    return tv.variant_spec(base, forms[label][0], source=f"variant {label}")


def try_variants() -> None:
    try:
        variants = []
        for label, (values, key_source) in forms.items():
            name = str(values["teacher.api_key_env"] or "")
            declared = name in declared_key_envs()  # an undeclared secret is never even read
            key = _secret(name) if key_source == "Streamlit secrets" and declared else None
            variants.append(Variant(label, build(label), api_key=key))
        with st.spinner(f"Asking {plural(len(variants), 'variant')} on {plural(len(rows), 'row')}…"):
            st.session_state["tp.result"] = compare(
                store, variants, rows, dataset_size=dataset_size, actor=actor
            )
        st.session_state.pop("tp.error", None)
    except (SpecError, MissingApiKeyError, RuntimeError, ValueError) as err:
        st.session_state.pop("tp.result", None)
        st.session_state["tp.error"] = str(err)


run_label = "Compare A and B" if with_b else "Try variant A"
if not may_launch:
    st.caption(ui_common.role_note(actor, Right.LAUNCH, "ask the teacher (it costs money) or launch jobs"))
elif st.button(run_label, type="primary", icon=":material/play_arrow:", disabled=not rows, key="tp.run"):
    try_variants()
if not rows:
    st.caption("Pick or type at least one row to try.")
if error := st.session_state.get("tp.error"):
    st.error(error)
if result := st.session_state.get("tp.result"):
    table, numbers = result
    st.dataframe(
        numbers,
        hide_index=True,
        column_config={
            "valid": st.column_config.ProgressColumn("valid", format="percent", min_value=0, max_value=1),
            "cost (USD)": st.column_config.NumberColumn(format="$%.5f"),
            "projected cost (USD)": st.column_config.NumberColumn(
                f"cost of {dataset_size:,} rows",
                format="$%.2f",
                help="Mean tokens per answer × prices × rows.",
            ),
            "mean latency (s)": st.column_config.NumberColumn(format="%.2f"),
        },
        placeholder="",
    )
    labels_ab = variant_labels(table)
    metric = base.curve_metric()
    for _, line in table.iterrows():
        with st.container(border=True):
            st.text(line["input"])
            has_ref = bool(line["reference"])
            cells = st.columns(len(labels_ab) + has_ref)
            if has_ref:
                cells[0].caption("Reference")
                cells[0].code(line["reference"], language=None, wrap_lines=True)
            for cell, label in zip(cells[has_ref:], labels_ab, strict=True):
                cell.caption(answer_caption(line, label, metric))
                cell.code(line[f"{label} answer"] or "", language=None, wrap_lines=True)

# ----------------------------------------------------------------------------- launch
st.subheader("Launch")
st.caption(
    f"A teacher-only job answers the demo dataset ({base.data.demo_examples:,} examples) with a variant, "
    "no training. Jobs read keys from environment variables only, never from Streamlit secrets."
)
with st.container(horizontal=True):
    for label in forms:
        if st.button(
            f"Launch teacher job with {label}",
            icon=":material/rocket_launch:",
            key=f"tp.launch.{label}",
            disabled=not may_launch,
        ):
            try:
                st.session_state["tp.launched"] = launch_teacher_job(store, build(label), actor=actor)
            except SpecError as err:
                st.error(str(err))
    st.page_link("views/launch.py", label="Full ablation on Launch", icon=":material/tune:")
if launched := st.session_state.get("tp.launched"):
    st.success(f"Teacher job queued in experiment `{launched}`; progress below and on Runs.")


@st.fragment(run_every=2)
def live_jobs() -> None:
    """Teacher jobs, redrawn every 2 s: status, progress, answers and cost so far, ETA."""
    frame = tv.teacher_jobs_frame(Store())
    if frame.empty:
        st.caption("No teacher jobs yet. Launch one above, or a full experiment on Launch.")
        return
    st.dataframe(
        frame,
        hide_index=True,
        column_config={
            "progress": st.column_config.ProgressColumn("progress", format="percent", width=150),
            "eta": st.column_config.TextColumn("ETA", width=70),
            "message": st.column_config.TextColumn("answers · cost / error", width="medium"),
        },
        placeholder="",
    )


st.subheader("Teacher jobs")
live_jobs()
