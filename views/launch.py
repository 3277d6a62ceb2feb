"""Launch: configure an experiment (form or YAML), validate it, and queue it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from engine.access import Right
from engine.specs import ExperimentSpec, SpecError, load_spec
from engine.store import Store
from engine.teacher.keys import check_spec_keys, key_choices, key_label
from engine.training.model_refs import check_spec_models
from engine.ui import common as ui
from engine.ui import presets
from engine.ui.launch_form import FORM_GROUPS, FormField

st.title("Launch an experiment")
st.write(
    "Configure a data-size ablation — the same student trained on growing numbers of "
    "teacher-labelled examples — and queue it; nothing is queued unless the whole spec is valid."
)

PRESET_LABELS = list(presets.PRESETS)
actor = st.session_state["actor"]
may_launch = actor.can(Right.LAUNCH)
if not may_launch:
    st.info(ui.role_note(actor, Right.LAUNCH, "launch experiments; you can still write and validate a spec"))


def _apply_preset() -> None:
    """Fill every form field (and the YAML editor) from the chosen preset."""
    spec = presets.preset(st.session_state["preset"])
    for key, value in ui.form_defaults(spec).items():
        st.session_state[f"f.{key}"] = value
    st.session_state["spec_yaml"] = spec.to_yaml()


st.session_state.setdefault("preset", PRESET_LABELS[0])
if any(f"f.{k}" not in st.session_state for k in ui.FORM_FIELDS):
    _apply_preset()
base = presets.preset(st.session_state["preset"])


def _bullets(err: Exception) -> str:
    return "\n".join(f"- {line}" for line in str(err).splitlines())


def _submit(build: Callable[[], ExperimentSpec]) -> None:
    """Queue the spec ``build`` returns, or remember why it was refused (nothing queued)."""
    try:
        spec = build()
        # Refuses what the workspace cannot run (SpecError) or the role may not (AccessDenied).
        exp_id = ui.launch(Store(), spec, actor=st.session_state["actor"])
    except (SpecError, PermissionError) as err:
        st.session_state.pop("launched", None)
        st.session_state["launch_error"] = f"Refused — nothing was queued.\n\n{_bullets(err)}"
        return
    st.session_state.pop("launch_error", None)
    st.session_state["launched"] = (exp_id, ui.plan_sentence(spec))
    st.session_state["focus_experiment"] = exp_id


def _form_spec() -> ExperimentSpec:
    spec = ui.spec_from_form({k: st.session_state[f"f.{k}"] for k in ui.FORM_FIELDS}, base)
    check_spec_keys(spec)
    check_spec_models(Store(), spec)  # a model folder outside the model roots is never looked at
    return spec


def _widget(field: FormField, where: Any) -> None:
    """One form widget; its value lives in ``st.session_state["f.<dotted key>"]``."""
    key, kw = f"f.{field.key}", {"help": field.help}
    if field.kind == "bool":
        where.checkbox(field.label, key=key, **kw)
    elif field.kind == "select":
        where.selectbox(field.label, field.options, key=key, **kw)
    elif field.kind == "key":  # declared names only: a typed name could read any server variable
        choices = key_choices(st.session_state.get(key))
        where.selectbox(field.label, choices, format_func=key_label, key=key, **kw)
    elif field.kind == "int":
        where.number_input(field.label, step=1, key=key, **kw)
    elif field.kind == "float":
        step = 1e-5 if field.key.endswith("learning_rate") else 0.01
        where.number_input(field.label, step=step, format="%g", key=key, **kw)
    else:
        where.text_input(field.label, key=key, **kw)


def _yaml_spec() -> ExperimentSpec:
    spec = load_spec(st.session_state["spec_yaml"])
    check_spec_keys(spec)  # Validate says it too, not only Launch
    check_spec_models(Store(), spec)
    return spec


messages = st.container()
form_tab, yaml_tab = st.tabs(["Form", "YAML"])

with form_tab:
    st.selectbox(
        "Preset",
        PRESET_LABELS,
        key="preset",
        on_change=_apply_preset,
        help="Fills every field with defaults that work for that setup; the task comes from the demo.",
    )
    for tab, fields in zip(st.tabs(list(FORM_GROUPS)), FORM_GROUPS.values(), strict=True):
        with tab:
            cols = st.columns(3, gap="medium")
            for i, field in enumerate(fields):
                _widget(field, cols[i % 3])
    try:
        st.info(f"{presets.diff_vs_newest(Store(), _form_spec())}.", icon=":material/difference:")
    except SpecError as err:
        st.caption(f"Not valid yet: {str(err).splitlines()[0]}")
    # A callback, so the diff line above already compares with the experiment just queued.
    st.button(
        "Validate and launch",
        type="primary",
        key="form_launch",
        on_click=_submit,
        args=(_form_spec,),
        disabled=not may_launch,
    )

with yaml_tab:
    st.caption("The full spec. Unknown keys are refused, so a typo never passes silently.")
    # Monospace for the spec editor only (its container carries the widget key as a class).
    st.html("<style>.st-key-spec_yaml textarea {font-family: ui-monospace, monospace;}</style>")
    st.session_state.setdefault("spec_yaml", base.to_yaml())
    st.text_area("Spec (YAML)", key="spec_yaml", height=520, label_visibility="collapsed")
    with st.container(horizontal=True):
        validate_clicked = st.button("Validate", key="yaml_validate")
        launch_clicked = st.button("Launch", key="yaml_launch", type="primary", disabled=not may_launch)
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
        st.page_link("views/runs.py", label="Watch it on Runs", icon=":material/monitoring:")
