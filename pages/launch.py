"""Launch: configure an experiment (form or YAML), validate it, and queue it."""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from engine import ui
from engine.specs import ExperimentSpec, SpecError, demo_spec, load_spec
from engine.store import Store

st.title("Launch an experiment")
st.write(
    "Configure a data-size ablation — the same student trained on growing numbers of "
    "teacher-labelled examples — and queue it; nothing is queued unless the whole spec is valid."
)

base = demo_spec("standard")
defaults = ui.form_defaults(base)


def _bullets(err: SpecError) -> str:
    return "\n".join(f"- {line}" for line in str(err).splitlines())


def _submit(build: Callable[[], ExperimentSpec]) -> None:
    """Queue the spec ``build`` returns, or remember why it was refused (nothing queued)."""
    try:
        spec = build()
    except SpecError as err:
        st.session_state.pop("launched", None)
        st.session_state["launch_error"] = f"Refused — nothing was queued.\n\n{_bullets(err)}"
        return
    exp_id = ui.launch(Store(), spec)
    st.session_state.pop("launch_error", None)
    st.session_state["launched"] = (exp_id, ui.plan_sentence(spec))
    st.session_state["focus_experiment"] = exp_id


def _form_spec() -> ExperimentSpec:
    return ui.spec_from_form({k: st.session_state[f"f.{k}"] for k in ui.FORM_FIELDS}, base)


def _yaml_spec() -> ExperimentSpec:
    return load_spec(st.session_state["spec_yaml"])


messages = st.container()
form_tab, yaml_tab = st.tabs(["Form", "YAML"])

with form_tab, st.form("launch_form", border=False):
    st.caption("The task and the fields not shown come from the demo spec; use the YAML tab for everything.")
    basics, teacher, student = st.columns(3, gap="large")
    with basics:
        st.subheader("Basics")
        st.text_input("Name", defaults["name"], key="f.name")
        st.text_input(
            "Train sizes",
            defaults["ablation.train_sizes"],
            key="f.ablation.train_sizes",
            help="Comma-separated; each is the first n examples of one shuffled pool.",
        )
        st.text_input(
            "Seeds",
            defaults["ablation.seeds"],
            key="f.ablation.seeds",
            help="Each size is trained once per seed; several seeds give error bars.",
        )
        st.number_input(
            "Demo examples",
            value=defaults["data.demo_examples"],
            step=100,
            key="f.data.demo_examples",
            help="Generated examples (train pool + test).",
        )
        st.number_input(
            "Test size",
            value=defaults["data.test_size"],
            step=10,
            key="f.data.test_size",
            help="Held-out examples every run is scored on.",
        )
        st.number_input("Data seed", value=defaults["data.seed"], key="f.data.seed")
    with teacher:
        st.subheader("Teacher")
        st.selectbox(
            "Kind",
            ["demo", "openai"],
            index=["demo", "openai"].index(defaults["teacher.kind"]),
            key="f.teacher.kind",
            help="demo: built-in simulated teacher; openai: any OpenAI-compatible endpoint.",
        )
        st.text_input(
            "Base URL",
            defaults["teacher.base_url"],
            key="f.teacher.base_url",
            placeholder="http://localhost:8000/v1",
        )
        st.text_input("Model", defaults["teacher.model"], key="f.teacher.model")
        st.text_input(
            "API key variable",
            defaults["teacher.api_key_env"],
            key="f.teacher.api_key_env",
            placeholder="OPENAI_API_KEY",
            help="The NAME of an environment variable holding the key — never the key.",
        )
        c1, c2 = st.columns(2)
        c1.number_input("Concurrency", value=defaults["teacher.concurrency"], key="f.teacher.concurrency")
        c2.number_input("Max tokens", value=defaults["teacher.max_tokens"], key="f.teacher.max_tokens")
        c1.number_input(
            "Temperature", value=defaults["teacher.temperature"], step=0.1, key="f.teacher.temperature"
        )
        c2.number_input(
            "Demo error rate",
            value=defaults["teacher.demo_error_rate"],
            step=0.05,
            key="f.teacher.demo_error_rate",
            help="Demo teacher only.",
        )
        c1.number_input(
            "$ / 1M input tokens",
            value=defaults["teacher.price_input_per_m"],
            step=0.1,
            key="f.teacher.price_input_per_m",
        )
        c2.number_input(
            "$ / 1M output tokens",
            value=defaults["teacher.price_output_per_m"],
            step=0.1,
            key="f.teacher.price_output_per_m",
        )
    with student:
        st.subheader("Student")
        st.text_input(
            "Model",
            defaults["student.model"],
            key="f.student.model",
            help="`tiny` (built offline), a Hub id such as Qwen/Qwen2.5-0.5B, or a local path.",
        )
        st.text_input(
            "Revision",
            defaults["student.revision"],
            key="f.student.revision",
            placeholder="main",
            help="Hub branch, tag or commit (Hub ids only).",
        )
        c1, c2 = st.columns(2)
        c1.number_input(
            "Max steps",
            value=defaults["student.max_steps"],
            step=10,
            key="f.student.max_steps",
            help="Fixed across sizes: the ablation varies data.",
        )
        c2.number_input("Batch size", value=defaults["student.batch_size"], key="f.student.batch_size")
        c1.number_input(
            "Learning rate",
            value=defaults["student.learning_rate"],
            step=1e-4,
            format="%g",
            key="f.student.learning_rate",
        )
        c2.number_input(
            "Max length", value=defaults["student.max_length"], step=16, key="f.student.max_length"
        )
        st.checkbox("LoRA adapters", defaults["student.lora.enabled"], key="f.student.lora.enabled")
        c1, c2 = st.columns(2)
        c1.number_input("LoRA r", value=defaults["student.lora.r"], key="f.student.lora.r")
        c2.number_input("LoRA alpha", value=defaults["student.lora.alpha"], key="f.student.lora.alpha")
    if st.form_submit_button("Validate and launch", type="primary"):
        _submit(_form_spec)

with yaml_tab:
    st.caption("The full spec. Unknown keys are refused, so a typo never passes silently.")
    # Monospace for the spec editor only (its container carries the widget key as a class).
    st.html("<style>.st-key-spec_yaml textarea {font-family: ui-monospace, monospace;}</style>")
    st.session_state.setdefault("spec_yaml", base.to_yaml())
    st.text_area("Spec (YAML)", key="spec_yaml", height=520, label_visibility="collapsed")
    with st.container(horizontal=True):
        validate_clicked = st.button("Validate", key="yaml_validate")
        launch_clicked = st.button("Launch", key="yaml_launch", type="primary")
    if validate_clicked:
        st.session_state.pop("launch_error", None)
        try:
            st.success(f"Valid: {ui.plan_sentence(_yaml_spec())}.")
        except SpecError as err:
            st.error(f"Not valid:\n\n{_bullets(err)}")
    if launch_clicked:
        _submit(_yaml_spec)

with messages:
    if error := st.session_state.get("launch_error"):
        st.error(error)
    if launched := st.session_state.get("launched"):
        exp_id, plan = launched
        st.success(f"Experiment `{exp_id}` queued: {plan}.")
        st.page_link("pages/runs.py", label="Watch it on Runs", icon=":material/monitoring:")
