"""Compare: ask the base model, a run's student and the teacher the same prompt, side by side."""

from __future__ import annotations

import streamlit as st

from engine.access import Right
from engine.serving import compare
from engine.serving import server as serving
from engine.specs import SpecError
from engine.store import Store
from engine.ui import common as ui
from engine.words import plural

st.title("Compare")
st.write(
    "Type a prompt and see how the untrained base model, a trained student and the teacher answer it "
    "— students are served locally through `transformers serve` while you compare."
)

store = Store()
actor = st.session_state["actor"]
may_ask = actor.can(Right.LAUNCH)


def _stop_all(home: str) -> None:
    n = serving.stop_all(Store(home), actor=st.session_state["actor"])
    st.session_state["compare_note"] = f"Stopped {plural(n, 'model server')}."
    st.session_state.pop("compare_answers", None)


def _server_status() -> None:
    running = serving.list_servers(store)
    with st.container(horizontal=True, vertical_alignment="center"):
        if running:
            st.caption(
                f"{plural(len(running), 'model server')} running: "
                + ", ".join(f"`{s.key}` on :{s.port}" for s in running)
                + f"; each stops itself after {serving.idle_limit_s() / 60:.0f} min unused."
            )
        else:
            st.caption(
                "No model servers running; **Ask** starts them (the first answer takes a few seconds)."
            )
        st.button(
            "Stop servers",
            key="stop_servers",
            icon=":material/stop_circle:",
            disabled=not running or not may_ask,
            on_click=_stop_all,
            args=(str(store.home),),
        )
    if note := st.session_state.pop("compare_note", None):
        st.success(note)


def _answers(answers: list[compare.Answer]) -> None:
    for col, a in zip(st.columns(len(answers), gap="medium"), answers, strict=True):
        with col:
            st.subheader(a.label.capitalize())
            if a.answer is not None:
                st.code(a.answer or "(empty answer)", language=None, wrap_lines=True)
            else:
                st.warning(a.error or "No answer.")
            facts = [
                f"{a.latency_s:.2f} s" if a.latency_s is not None else "",
                f"{a.tokens} tokens" if a.tokens else "",
            ]
            if a.note and a.answer is not None:
                facts.append(a.note)
            st.caption(" · ".join(f for f in facts if f))


exps = store.list_experiments()
runs_by_exp = {e["id"]: compare.servable_runs(store, e["id"]) for e in exps}
exps = [e for e in exps if runs_by_exp[e["id"]]]
if not exps:
    st.info(
        "No trained student yet. Run an experiment (the demo on Overview, or your own on Launch); "
        "once a training run has saved its model you can compare it here."
    )
    st.page_link("views/overview.py", label="Overview", icon=":material/home:")
    st.page_link("views/launch.py", label="Launch", icon=":material/rocket_launch:")
    _server_status()
    st.stop()

labels = {e["id"]: ui.experiment_label(e) for e in exps}
ids = list(labels)
exp_id = st.selectbox(
    "Experiment",
    ids,
    index=ui.focus_index(ids, st.session_state.get("focus_experiment")),
    format_func=labels.get,
)
runs = {r["id"]: r for r in runs_by_exp[exp_id]}
run_id = st.selectbox(
    "Student run", list(runs), index=len(runs) - 1, format_func=lambda i: compare.run_label(runs[i])
)
examples = compare.example_inputs(store, exp_id)
prompt = st.text_area(
    "Prompt",
    examples[0] if examples else "",
    height=120,
    key=f"compare_prompt_{exp_id}",
    help="The task's input; each model gets it rendered with the experiment's prompt template.",
)
if not may_ask:
    st.caption(ui.role_note(actor, Right.LAUNCH, "ask models (it starts servers and pays the teacher)"))
elif st.button("Ask", type="primary", icon=":material/send:", disabled=not prompt.strip()):
    with st.spinner("Starting model servers and asking…"):
        try:
            spec = compare.experiment_spec(store, exp_id)
            targets = compare.targets_for(store, exp_id, run_id, prompt, actor=actor)
            st.session_state["compare_answers"] = compare.compare(
                prompt, targets, spec.task, spec.student.max_new_tokens
            )
        except serving.ServeError as err:
            st.session_state.pop("compare_answers", None)
            st.error(f"Could not start a model server:\n\n```\n{err}\n```")
        except SpecError as err:  # a model folder outside the model roots: nothing was started
            st.session_state.pop("compare_answers", None)
            st.error(str(err))
if answers := st.session_state.get("compare_answers"):
    _answers(answers)
_server_status()
