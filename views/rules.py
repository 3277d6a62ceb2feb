"""Rules: declarative label functions written here, Python ones listed from the rules/ folder."""

from __future__ import annotations

import json
from typing import Any

import streamlit as st

from engine.access import Right
from engine.review import items as review
from engine.review import rules_file
from engine.scoring.label_functions import RuleError, rules_folder
from engine.store import Store
from engine.ui import common as ui

st.title("Rules")
st.write(
    "Rules reject an answer and say why. They run on every answer under review and their "
    "coverage, overlap and conflict show which ones do real work."
)

store = Store()
home = store.home
actor = st.session_state["actor"]
may_edit = actor.can(Right.RULES)
KIND_HELP = {
    "regex_must_match": "Reject answers in which the regular expression does not occur.",
    "regex_must_not_match": "Reject answers in which the regular expression occurs.",
    "keywords_forbidden": "Reject answers that mention any keyword as a whole word.",
    "forbidden_phrases": "Reject answers that contain any phrase.",
    "length_bounds": "Reject answers shorter than min or longer than max.",
    "json_schema": "Reject answers that are not JSON valid against a JSON Schema.",
    "required_fields": "Reject answers that are not a JSON object with every field present.",
}


def _lines(key: str) -> list[str]:
    return [s.strip() for s in str(st.session_state.get(key) or "").splitlines() if s.strip()]


def _form_rule() -> dict[str, Any]:
    """The rule the form describes, as plain data (validated by the engine, never run)."""
    ss = st.session_state
    kind = ss["rule_kind"]
    rule: dict[str, Any] = {"kind": kind, "name": str(ss.get("rule_name") or "").strip()}
    if kind.startswith("regex"):
        rule.update(pattern=ss.get("rule_pattern") or "", ignore_case=bool(ss.get("rule_ignore_case")))
    elif kind == "keywords_forbidden":
        rule["keywords"] = _lines("rule_keywords")
    elif kind == "forbidden_phrases":
        rule.update(phrases=_lines("rule_phrases"), case_sensitive=bool(ss.get("rule_case_sensitive")))
    elif kind == "length_bounds":
        rule.update(min=ss.get("rule_min"), max=ss.get("rule_max"), unit=ss.get("rule_unit", "chars"))
    elif kind == "json_schema":
        try:
            rule["schema"] = json.loads(ss.get("rule_schema") or "")
        except ValueError as err:
            raise RuleError(f"schema: not valid JSON: {err}") from None
    elif kind == "required_fields":
        rule.update(fields=_lines("rule_fields"), allow_empty=bool(ss.get("rule_allow_empty")))
    return rule


def _add() -> None:
    try:
        saved = rules_file.add_rule(Store(home), _form_rule(), actor=st.session_state["actor"])
    except RuleError as err:
        st.session_state["rules_error"] = str(err)
        return
    st.session_state["rules_note"] = f"Saved rule {saved.name!r}."


def _remove(name: str) -> None:
    rules_file.remove_rule(Store(home), name, actor=st.session_state["actor"])
    st.session_state["rules_note"] = f"Deleted rule {name!r}."


try:
    rules = rules_file.read_rules(home)
except RuleError as err:
    st.error(f"`{rules_file.rules_path(home)}` is invalid and is not applied: {err}")
    rules = []
functions, fn_error = rules_file.label_function_names(home)

if note := st.session_state.pop("rules_note", None):
    st.success(note)
if error := st.session_state.pop("rules_error", None):
    st.error(f"Not saved: {error}")

st.subheader(f"Rules ({len(rules)})")
if not rules and not functions:
    st.info(
        "No rules yet. There are two kinds:\n\n"
        "* **Declarative rules**, written below: regex must / must-not match, forbidden "
        "keywords or phrases, length bounds, JSON-schema validity, required fields. What you type "
        "is matched as text, never run.\n"
        f"* **Python label functions**, only from files in `{rules_folder(home)}` on the "
        "workspace's disk (decorated with `@label_function`). This page lists them and never "
        "accepts code."
    )
for rule in rules:
    fields = rule.model_dump(mode="json", by_alias=True, exclude_defaults=True, exclude={"name"})
    left, right = st.columns([6, 1])
    left.markdown(f"**{rule.name}** · `{rule.kind}`")
    left.code(json.dumps(fields, ensure_ascii=False), language="json")
    if may_edit:
        right.button("Delete", key=f"rule_del_{rule.name}", on_click=_remove, args=(rule.name,))

st.subheader("Python label functions")
if fn_error:
    st.error(fn_error)
elif functions:
    st.write(", ".join(f"`{f}`" for f in functions))
    st.caption("Use one with a `kind: python` rule in rules.yaml.")
else:
    st.caption(f"None in `{rules_folder(home)}`.")

st.subheader("Add a rule")
if not may_edit:
    st.caption(ui.role_note(actor, Right.RULES, "change the rules"))
kind = st.selectbox("Kind", rules_file.DECLARATIVE_KINDS, key="rule_kind", disabled=not may_edit)
st.caption(KIND_HELP.get(kind, ""))
st.text_input("Name", key="rule_name", placeholder="unique, e.g. no_competitors")
if kind.startswith("regex"):
    st.text_input("Pattern (regular expression)", key="rule_pattern")
    st.checkbox("Ignore case", key="rule_ignore_case")
elif kind == "keywords_forbidden":
    st.text_area("Keywords (one a line)", key="rule_keywords")
elif kind == "forbidden_phrases":
    st.text_area("Phrases (one a line)", key="rule_phrases")
    st.checkbox("Case sensitive", key="rule_case_sensitive")
elif kind == "length_bounds":
    c1, c2, c3 = st.columns(3)
    c1.number_input("Min", min_value=0, value=None, step=1, key="rule_min")
    c2.number_input("Max", min_value=0, value=None, step=1, key="rule_max")
    c3.selectbox("Unit", ["chars", "tokens"], key="rule_unit")
elif kind == "json_schema":
    st.text_area("JSON Schema", key="rule_schema", placeholder='{"type": "object"}')
elif kind == "required_fields":
    st.text_area("Fields (one a line; a.b looks inside a)", key="rule_fields")
    st.checkbox("Allow empty values", key="rule_allow_empty")
st.button("Add rule", key="rule_add", type="primary", on_click=_add, disabled=not may_edit)

st.subheader("Stats on a run")
runs = {r["id"]: r["label"] for r in review.reviewable_runs(store)}
if not runs:
    st.caption("No run with saved answers yet.")
elif rules or functions:
    run_id = st.selectbox("Run", list(runs), format_func=runs.__getitem__, key="rules_run")
    try:
        stats = rules_file.run_rule_stats(store, run_id)
    except RuleError as err:
        st.error(str(err))
    else:
        st.dataframe(
            stats,
            hide_index=True,
            column_config={
                c: st.column_config.NumberColumn(format="%.2f")
                for c in ("coverage", "reject_rate", "accept_rate", "overlap", "conflict")
            },
            placeholder="",
        )
        st.caption(
            "coverage: share of answers the rule votes on; overlap: ... that another rule votes on "
            "too; conflict: ... where another rule votes the opposite way."
        )
