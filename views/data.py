"""Data: import a dataset (validated row by row, all or nothing) and see its diversity and balance."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import streamlit as st

from engine.access import Right
from engine.data import diversity as div
from engine.data import embeddings as emb
from engine.data.cleaning import list_rules
from engine.data.dedup import DEFAULT_THRESHOLD as DEDUP_DEFAULT
from engine.data.embed_job import embed_now, latest_embed_job, queue_embed
from engine.data.importing import DEDUP_THRESHOLD_LABEL, import_info
from engine.data.roots import DATA_ROOTS_VAR, MAX_IMPORT_MB, PathNotAllowed, data_roots, resolve_data_path
from engine.specs import TaskSpec
from engine.store import ACTIVE, Store
from engine.ui import common as ui
from engine.ui import data as dv

FORMATS_HELP = (
    "**JSONL / JSON** — chat (`messages`), `prompt`/`completion`, `instruction`/`input`/`output`, "
    "or production logs (`request`/`response` of chat-completions calls). **CSV / TSV / Parquet** — "
    "any columns: you say which holds the prompt and the answer. **A saved Hugging Face dataset** — "
    "the folder `save_to_disk` wrote (give its path under a data root). A file without an extension "
    "is recognised by its content."
)

store = Store()
actor = st.session_state["actor"]
st.title("Data")
st.write(
    "Import the examples your student learns from — every bad row is reported by line before "
    "anything is saved — and check their lengths, labels, near-duplicates and topics."
)


@st.cache_data(ttl=600, show_spinner=False)
def _preview(home: str, path: str, mtime: float, reading: tuple[tuple[str, str], ...]) -> dv.SourcePreview:
    return dv.preview_source(Store(home), path, **dict(reading))


@st.cache_data(ttl=600, show_spinner=False)
def _examples(home: str, dataset_id: str) -> list[dict[str, Any]]:
    return Store(home).get_examples(dataset_id)  # datasets never change: cache freely


@st.cache_data(ttl=600, show_spinner=False)
def _near_dups(home: str, dataset_id: str, threshold: float) -> Any:
    return div.near_duplicates(_examples(home, dataset_id), threshold)


@st.cache_data(ttl=600, show_spinner=False)
def _map(home: str, dataset_id: str, k: int, n: int) -> emb.EmbeddingMap | None:
    vectors = emb.cached_embeddings(Store(home), dataset_id, n)
    return None if vectors is None else emb.cluster_map(vectors, k)


# ------------------------------------------------------------------------------ upload
def _source() -> Path | None:
    """The uploaded file (saved under ``uploads/``), or the typed server path if the data roots
    allow it (:class:`PathNotAllowed` otherwise), or None."""
    left, right = st.columns(2, gap="large")
    # No type= filter: public data sets often ship without an extension; the content decides.
    upload = left.file_uploader(
        "Upload a file", key="upload_file", help=f"Up to {MAX_IMPORT_MB} MB (what an import holds in memory)."
    )
    typed = right.text_input(
        "…or a path on the server",
        key="upload_path",
        placeholder="data/train.jsonl or a saved dataset folder",
        help="A file, or a folder written by Hugging Face datasets' save_to_disk, under one of the data "
        f"roots; a relative path is relative to the workspace. Anything else: upload it. An admin adds "
        f"folders with {DATA_ROOTS_VAR}.",
    )
    roots = ", ".join(f"`{root}`" for root in data_roots(store))
    right.caption(f"Only files under the data roots can be read: {roots}")
    if upload is not None:
        return dv.save_upload(store, upload.name, upload.getvalue(), actor=actor)
    return resolve_data_path(store, typed) if typed.strip() else None


def _reading(fmt: str | None, sid: str) -> dict[str, str]:
    """How a CSV or TSV is split into cells (the reader's ``delimiter`` and ``quotechar``)."""
    if fmt == "tsv":
        quoted = st.checkbox(
            'Cells are quoted with "',
            False,
            key=f"tsv_quoted.{sid}",
            help='Tab-separated files usually have no quoting: a " is part of the text. Turn on for '
            'files whose cells are wrapped in "…" (to hold tabs or line breaks).',
        )
        return {"quotechar": '"' if quoted else ""}
    if fmt == "csv":
        c1, c2, _ = st.columns(3)
        delimiter = c1.selectbox("Delimiter", list(dv.DELIMITERS), key=f"csv_delimiter.{sid}")
        quote = c2.selectbox("Quote character", list(dv.QUOTES), key=f"csv_quote.{sid}")
        return {"delimiter": dv.DELIMITERS[delimiter], "quotechar": dv.QUOTES[quote]}
    return {}


def _mapping(preview: dv.SourcePreview, sid: str) -> dict[str, str]:
    cols = preview.columns or []
    auto, none = "(from column names)", "(none)"
    guess = preview.guess
    prompt_opts = ([auto] if dv.auto_mapping_ok(cols, guess["answer"]) else []) + cols
    c1, c2, c3 = st.columns(3)
    prompt = c1.selectbox(
        "Prompt column",
        prompt_opts,
        index=0 if prompt_opts[0] == auto else cols.index(guess["prompt"] or cols[0]),
        key=f"map.prompt.{sid}",
    )
    if prompt == auto:
        return {}
    answers = [none, *cols]
    answer = c2.selectbox(
        "Answer column", answers, index=answers.index(guess["answer"] or none), key=f"map.answer.{sid}"
    )
    instruction = c3.selectbox(
        "Instruction column",
        [none, *cols],
        key=f"map.instruction.{sid}",
        help="Optional: put before the prompt.",
    )
    return dv.column_mapping(
        prompt, None if answer == none else answer, None if instruction == none else instruction
    )


def _rule_params(rule: dict[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name, default in rule["params"].items():
        key, label = f"rule.{rule['rule']}.{name}", name.replace("_", " ")
        if isinstance(default, bool):
            params[name] = st.checkbox(label, default, key=key)
        elif isinstance(default, int | float) or default is None:
            step = 0.05 if isinstance(default, float) else 1
            params[name] = st.number_input(label, value=default, step=step, key=key, placeholder="no limit")
        elif isinstance(default, tuple | list):
            params[name] = st.multiselect(label, ["input", "output"], list(default), key=key)
        else:
            params[name] = st.text_input(label, str(default), key=key)
    return params


def _task_inputs(path: Path) -> tuple[dict[str, Any], TaskSpec | None]:
    c1, c2, c3, c4 = st.columns([2, 1, 2, 1])
    name = c1.text_input("Dataset name", path.name.split(".")[0], key=f"ds_name.{path}")
    kind = c2.selectbox("Answer kind", ["text", "json", "label"], key="task_kind")
    extra = ""
    if kind != "text":
        what = "JSON fields" if kind == "json" else "Labels"
        extra = c3.text_input(what, key=f"task_{kind}", placeholder="comma-separated, e.g. intent, product")
    test = c4.number_input(
        "Test share", 0.01, 0.9, 0.1, 0.05, key="test_share", help="Frozen held-out split."
    )
    threshold = c4.number_input(
        DEDUP_THRESHOLD_LABEL,
        0.3,
        1.0,
        DEDUP_DEFAULT,
        0.05,
        key="dedup_threshold",
        help="Prompts at least this similar (character 5-grams) stay on one side of the split, so no "
        "paraphrase of a test prompt is trained on. Raise it if near-duplicate groups leave no room "
        "for a test split.",
    )
    template = c1.text_area(
        "Prompt template",
        "{input}",
        key="template",
        height=90,
        help="Plain text with {input} where the example goes; {{ and }} for literal braces.",
    )
    checks = c3.checkbox(
        "Refuse answers that don't fit the kind", True, key="check_outputs", disabled=kind == "text"
    )
    opts = {
        "name": name,
        "share": float(test),
        "check_outputs": checks and kind != "text",
        "dedup_threshold": float(threshold),
    }
    try:
        task = dv.make_task(
            name, kind, extra if kind == "label" else "", extra if kind == "json" else "", template
        )
    except ValueError as err:
        st.error(str(err))
        return opts, None
    return opts, task


def _show_check(check: dv.ImportCheck) -> None:
    report = check.report
    for col, (label, value) in zip(
        st.columns(4),
        [
            ("Rows read", report.rows_read),
            ("Valid", report.rows_valid),
            ("Bad rows", report.bad_rows),
            ("After cleaning", len(check.records)),
        ],
        strict=True,
    ):
        col.metric(label, value)
    (st.error if report.fatal else st.warning if report.issues else st.success)(report.message)
    if report.issues:
        st.subheader("Bad rows")
        st.dataframe(dv.issues_frame(report), hide_index=True, placeholder="")
    if report.cleaning:
        st.subheader("Cleaning, rule by rule")
        st.dataframe(dv.cleaning_frame(report), hide_index=True, placeholder="")
    if report.dropped:
        n_dropped = len(report.dropped)
        label = f"{n_dropped} row{'s' * (n_dropped != 1)} dropped by cleaning, with reasons"
        with st.expander(label, expanded=n_dropped <= 20):
            st.dataframe(dv.dropped_frame(report), hide_index=True, placeholder="")
    if check.records:
        with st.expander("Rows that would be imported"):
            st.dataframe(check.preview(), hide_index=True, placeholder="")


def _import_buttons(path: Path, check: dv.ImportCheck, task: TaskSpec, **kwargs: Any) -> None:
    report, n_test = check.report, dv.test_count(kwargs.pop("share"), len(check.records))
    st.caption(f"Importing freezes a test split of {n_test} examples; nothing is written on refusal.")
    busy = "import_job" in st.session_state  # one import at a time from this page
    c1, c2 = st.columns(2)
    valid = c1.button(
        "Import valid rows",
        type="primary" if report.issues else "secondary",
        disabled=busy or not report.can_import("valid_only"),
        width="stretch",
        help="Skip the bad rows listed above and import the rest.",
    )
    strict = c2.button(
        "Import (strict)",
        type="secondary" if report.issues else "primary",
        disabled=busy or not report.can_import("strict"),
        width="stretch",
        help="Import only if no row is bad; otherwise write nothing.",
    )
    if valid or strict:
        st.session_state.pop("import_refused", None)
        mode = "strict" if strict else "valid_only"
        try:
            job_id = dv.start_import(
                store, path, task=task, test_size=n_test, mode=mode, actor=actor, **kwargs
            )
        except ValueError as err:
            st.error(str(err))
            return
        st.session_state["import_job"] = job_id
        st.rerun()
    if refused := st.session_state.get("import_refused"):
        st.error(refused)


def _import_job() -> None:
    """The queued import: a live progress bar while it runs, then its outcome, once."""
    job_id = st.session_state.get("import_job")
    if job_id is None:
        return
    state = dv.import_state(store, job_id)
    if state is not None and state.active:
        _import_progress(job_id)
        return
    del st.session_state["import_job"]
    if state is None:
        return
    if state.dataset_id:
        st.session_state.update(data_imported=state.message, data_selected=state.dataset_id)
        st.session_state.pop("data_check", None)
    else:
        st.session_state["import_refused"] = state.message


@st.fragment(run_every=1)
def _import_progress(job_id: str) -> None:
    state = dv.import_state(store, job_id)
    if state is None or not state.active:
        st.rerun()  # the whole page: the outcome, and the new dataset in the Datasets tab
        return
    st.progress(min(1.0, state.fraction), text=state.message)
    st.caption(
        f"Import job `{job_id}` is {state.status}; the result appears here when it finishes, and the "
        "import goes on if you leave the page. If it stays queued, start the scheduler in the sidebar."
    )


def upload_tab() -> None:
    if not actor.can(Right.LAUNCH):
        note = ui.role_note(actor, Right.LAUNCH, "import data")
        st.info(f"{note} The **Datasets** tab shows what is here.")
        return
    try:
        path, refused = _source(), None
    except PathNotAllowed as err:  # the same words whether or not that file exists
        path, refused = None, str(err)
    _import_job()
    if done := st.session_state.get("data_imported"):
        st.success(f"{done} See the **Datasets** tab.")
    if refused:
        st.error(refused)
        return
    if path is None:
        st.info(f"Upload a file or give a path on the server to start. {FORMATS_HELP}")
        return
    sid = hashlib.sha256(str(path).encode()).hexdigest()[:8]
    reading = _reading(dv.source_format(store, path), sid)
    mtime = path.stat().st_mtime if path.exists() else 0.0  # a real path under a data root
    preview = _preview(str(store.home), str(path), mtime, tuple(reading.items()))
    if preview.error:
        st.error(preview.error)
        return
    cols = f" · columns: {', '.join(preview.columns)}" if preview.columns else ""
    st.caption(f"`{path}` · format: {preview.fmt}{cols}")
    st.dataframe(preview.rows, hide_index=True, placeholder="")
    mapping = _mapping(preview, sid) if preview.needs_mapping else {}
    opts, task = _task_inputs(path)
    rules = {r["rule"]: r for r in list_rules()}
    chosen = st.multiselect("Cleaning rules", list(rules), key="rules", help="Applied in this order.")
    specs = []
    for name in chosen:
        with st.expander(f"{name} — {rules[name]['description']}"):
            specs.append({"rule": name, **_rule_params(rules[name])})
    if task is None:
        return
    checked = {k: v for k, v in opts.items() if k != "dedup_threshold"}  # only the split uses it
    sig = json.dumps(
        [str(path), reading, mapping, task.model_dump(), specs, checked], sort_keys=True, default=str
    )
    if st.button("Validate", type="primary", icon=":material/fact_check:"):
        st.session_state.pop("data_imported", None)
        st.session_state.pop("import_refused", None)
        try:
            with st.spinner("Validating every row…"):
                check = dv.check_import(
                    store,
                    path,
                    task=task,
                    mapping=mapping,
                    rules=specs,
                    check_outputs=opts["check_outputs"],
                    **reading,
                )
            st.session_state["data_check"] = (sig, check)
        except ValueError as err:
            st.error(str(err))
    sig_seen, check = st.session_state.get("data_check", (None, None))
    if check is None:
        st.caption("Validation only reads the file: nothing is saved until you import.")
    elif sig_seen != sig:
        st.info("The file or settings changed since the last validation: validate again.")
    else:
        _show_check(check)
        _import_buttons(path, check, task, mapping=mapping or None, rules=specs, **opts, **reading)


# ---------------------------------------------------------------------------- datasets
def _embedding_section(ds_id: str, examples: list[dict[str, Any]]) -> emb.EmbeddingMap | None:
    st.subheader("Topics")
    n = len(examples)
    if emb.cached_embeddings(store, ds_id, n) is None:
        job = latest_embed_job(store, ds_id)
        if job and job["status"] in ACTIVE:
            _embed_progress(ds_id)
            return None
        if job and job["status"] == "failed":
            st.error(f"The embedding job failed: {job.get('error') or 'see its log on the Runs page'}")
        st.caption(
            f"Embeds every prompt with {emb.MODEL} (offline), clusters them and draws a 2-D map. "
            + ("Takes a few seconds." if n <= emb.INLINE_MAX else "Runs as a background job.")
        )
        if not actor.can(Right.LAUNCH):
            st.caption(ui.role_note(actor, Right.LAUNCH, "compute embedding maps"))
            return None
        if not st.button("Compute embedding map", icon=":material/scatter_plot:"):
            return None
        if n > emb.INLINE_MAX:
            queue_embed(store, ds_id, actor=actor)
            ui.start_scheduler(store)
            st.rerun()
        with st.spinner(f"Embedding {n} prompts…"):
            embed_now(store, ds_id, actor=actor)
        st.rerun()
    k = st.slider("Clusters", 2, emb.MAX_K, emb.default_k(n), key=f"k.{ds_id}") if n > 2 else 1
    emap = _map(str(store.home), ds_id, k, n)
    if emap is None:
        return None
    st.plotly_chart(emb.map_figure(emb.map_frame(examples, emap), emap.method))
    st.dataframe(emb.cluster_table(examples, emap), hide_index=True, placeholder="")
    return emap


@st.fragment(run_every=2)
def _embed_progress(ds_id: str) -> None:
    job = latest_embed_job(store, ds_id)
    if job is None or job["status"] not in ACTIVE:
        st.rerun()
    st.progress(min(1.0, job["progress"] or 0.0), text=job["message"] or f"Embedding job {job['status']}")
    st.caption(
        f"Job `{job['id']}` is {job['status']}; the map appears here when it finishes. "
        "If it stays queued, start the scheduler in the sidebar."
    )


def _balance_section(ds_id: str, task: TaskSpec, keys: list[str], emap: emb.EmbeddingMap | None) -> None:
    st.subheader("Balanced training sample")
    st.caption(
        "A train subset spread as evenly as possible over one field, so rare values keep their examples."
    )
    keys = keys + (["cluster"] if emap is not None else [])
    if not keys:
        st.caption("Balance needs a label, a field with few values, or clusters (compute the embedding map).")
        return
    examples = _examples(str(store.home), ds_id)
    train = [e for e in examples if e["split"] == "train"]
    if not train:
        st.caption("This dataset has no train examples to balance.")
        return
    c1, c2, c3 = st.columns(3)
    key = c1.selectbox("Balance by", keys, key=f"bal.key.{ds_id}")
    n = int(c2.number_input("Train examples", 1, len(train), min(len(train), 100), key=f"bal.n.{ds_id}"))
    seed = int(c3.number_input("Seed", 0, value=0, key=f"bal.seed.{ds_id}"))
    key_fn: Any = emb.cluster_key(examples, emap) if key == "cluster" and emap else div.field_key(task, key)
    sample = div.balanced_sample(train, key_fn, n, seed)
    st.dataframe(div.balance_frame(train, sample, key_fn), hide_index=True, placeholder="")
    if not actor.can(Right.LAUNCH):
        st.caption(ui.role_note(actor, Right.LAUNCH, "save datasets"))
    elif st.button("Save as a new dataset", help="This train split with the same frozen test split."):
        new_id = div.save_balanced_dataset(store, ds_id, key_fn, n, seed, actor=actor)
        st.success(
            f"Saved as {new_id}." if new_id != ds_id else "That is the whole train split: nothing to save."
        )


def _distributions(examples: list[dict[str, Any]], task: TaskSpec) -> list[str]:
    """Draw the label/field charts; returns the fields a sample can be balanced by."""
    st.subheader("Labels and fields")
    dists = div.field_distributions(examples, task)
    if not dists:
        st.caption(
            "Free-text answers: nothing to count (import as a JSON or label task for per-field counts)."
        )
    charted = [d for d in dists if d.categorical]
    for i in range(0, len(charted), 2):
        for col, d in zip(st.columns(2), charted[i : i + 2], strict=False):
            col.plotly_chart(div.distribution_figure(d))
    for d in (d for d in dists if not d.categorical):
        st.caption(f"`{d.field}`: {d.distinct} distinct values in {d.total} examples (id-like, not charted).")
    return [d.field for d in charted]


def datasets_tab() -> None:
    frame = dv.datasets_frame(store)
    if frame.empty:
        st.info(f"No datasets yet. Import one in the **Upload** tab. {FORMATS_HELP}")
        return
    st.dataframe(frame, hide_index=True, placeholder="")
    labels = dv.dataset_labels(frame)
    ids, sel = list(labels), st.session_state.get("data_selected")
    index = ids.index(sel) if sel in ids else 0
    ds_id = str(st.selectbox("Dataset", ids, index=index, format_func=lambda i: labels[i]))
    task = TaskSpec.model_validate((store.get_dataset(ds_id) or {})["task"])
    examples = _examples(str(store.home), ds_id)

    st.subheader("Lengths")
    unit = st.segmented_control("Unit", ["words", "chars"], default="words", key="len_unit") or "words"
    lengths = div.length_frame(examples)
    left, right = st.columns([3, 2])
    left.plotly_chart(div.length_histogram(lengths, unit))
    right.dataframe(div.length_summary(lengths), hide_index=True, placeholder="")
    keys = _distributions(examples, task)

    st.subheader("Near-duplicates")
    help_ = "Character 5-gram Jaccard similarity of the prompts."
    threshold = st.slider("Similarity threshold", 0.5, 1.0, 0.8, 0.05, key="dup_threshold", help=help_)
    dups = _near_dups(str(store.home), ds_id, threshold)
    st.markdown(div.duplicates_summary(dups))
    if not dups.empty:
        st.dataframe(dups, hide_index=True, placeholder="")

    _balance_section(ds_id, task, keys, _embedding_section(ds_id, examples))
    if info := import_info(store, ds_id):
        with st.expander("How it was imported"):
            st.caption(dv.import_summary(info))
            for table in (info["issues"], dv.cleaning_frame(info), dv.dropped_frame(info)):
                if len(table):
                    st.dataframe(table, hide_index=True, placeholder="")


# Open on Datasets when there are some, decided once per session so an import does not
# flip the tab under the user.
st.session_state.setdefault("data_tab", "Datasets" if store.list_datasets() else "Upload")
upload, datasets = st.tabs(["Upload", "Datasets"], default=st.session_state["data_tab"])
with upload:
    upload_tab()
with datasets:
    datasets_tab()
