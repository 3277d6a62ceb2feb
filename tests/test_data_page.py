"""The Data page through AppTest: empty state, validate and import via the path input (the
page queues an import job; tests run it in-process), bad rows named by line with nothing
imported on refusal, and a populated Datasets tab."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.element_tree import Button, Selectbox

from engine.data import embeddings as emb
from engine.data.importing import import_dataset
from engine.demo.task import generate_examples
from engine.specs import TaskSpec
from engine.store import Store
from tests.actors import ADMIN
from tests.inline_jobs import run_queued

APP = str(Path(__file__).resolve().parents[1] / "app.py")
DATA = Path(__file__).parent / "data"
PAGE = "views/data.py"


@pytest.fixture(autouse=True)
def _data_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The page reads the test files from ``tests/data`` and ``tmp_path``: an admin declared both."""
    monkeypatch.setenv("SENSEI_DATA_ROOTS", os.pathsep.join([str(DATA), str(tmp_path)]))


def fake_encoder(texts: list[str]) -> np.ndarray:
    """Cheap stand-in for MiniLM: one direction per intent word, plus a little noise."""
    words = ("refund", "cancel", "deliver", "unhappy", "upgrade")
    rng = np.random.default_rng(0)
    return np.array([[float(w in t.lower()) for w in words] + list(rng.normal(0, 0.1, 3)) for t in texts])


def open_page() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.switch_page(PAGE).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    parts = [*at.markdown, *at.caption, *at.info, *at.warning, *at.success, *at.error]
    return "\n".join(str(p.value) for p in parts)


def button(at: AppTest, label: str) -> Button:
    return next(b for b in at.button if b.label == label)


def select(at: AppTest, label: str) -> Selectbox:
    return next(s for s in at.selectbox if s.label == label)


def click_import(at: AppTest, store: Store, label: str) -> AppTest:
    """Click an Import button: the page queues an ``import`` job; run it as a worker would (no
    scheduler runs in tests), then rerun the page, which picks up the outcome."""
    button(at, label).click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert run_queued(store, "import"), "the page queued no import job"
    return at.run()


def validate(at: AppTest, path: Path) -> AppTest:
    at.text_input(key="upload_path").set_value(str(path)).run()
    button(at, "Validate").click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.fixture
def tickets(store: Store, tmp_path: Path) -> str:
    src = tmp_path / "tickets.jsonl"
    with src.open("w") as fh:
        for e in generate_examples(80, seed=5):
            fh.write(json.dumps({"prompt": e["input"], "completion": e["reference"]}) + "\n")
    task = TaskSpec(name="tickets", output_kind="json", json_fields=["intent", "product", "order_id"])
    ds_id, report = import_dataset(store, src, task=task, test_size=10)
    assert ds_id, report.message
    return ds_id


def test_empty_state_says_what_to_upload(store: Store) -> None:
    at = open_page()
    text = texts(at)
    assert "Upload a file or give a path on the server" in text and "No datasets yet" in text
    for fmt in ("JSONL", "CSV / TSV / Parquet", "Hugging Face"):
        assert fmt in text
    assert not at.dataframe and not at.get("plotly_chart")
    assert not [b for b in at.button if b.label == "Validate"]


def test_csv_is_mapped_validated_and_imported(store: Store) -> None:
    at = validate(open_page(), DATA / "good" / "qa.csv")
    assert select(at, "Prompt column").value == "question" and select(at, "Answer column").value == "answer"
    assert select(at, "Delimiter").value == "comma (,)"
    assert "All 6 rows are valid" in texts(at)
    assert store.list_datasets() == []  # validating writes nothing
    assert not button(at, "Import (strict)").disabled
    click_import(at, store, "Import (strict)")
    assert not at.exception, [e.value for e in at.exception]
    (ds,) = store.list_datasets()
    assert (ds["name"], ds["n_train"], ds["n_test"]) == ("qa", 5, 1)
    assert "Imported as qa v1" in texts(at)
    assert store.get_examples(ds["id"])[0]["reference"] == "Paris"
    assert at.get("plotly_chart")  # the Datasets tab now draws the new dataset


def test_bad_rows_are_named_by_line_and_a_refused_import_writes_nothing(store: Store) -> None:
    at = validate(open_page(), DATA / "bad" / "bad_json_line.jsonl")
    issues = at.dataframe[1].value
    assert list(issues["line"]) == ["2"] and "invalid JSON" in issues["reason"][0]
    assert "1 bad row, 2 valid" in texts(at)
    assert button(at, "Import (strict)").disabled and not button(at, "Import valid rows").disabled
    # The two valid rows are the same prompt: no test split is possible, so the import refuses.
    click_import(at, store, "Import valid rows")
    assert "Nothing was imported" in texts(at)
    assert store.list_datasets() == []
    assert not (store.home / "datasets").exists()


def test_unreadable_file_cannot_be_imported(store: Store) -> None:
    at = validate(open_page(), DATA / "bad" / "csv_bad_quote.csv")
    assert "cannot be read as a whole" in texts(at)
    assert button(at, "Import (strict)").disabled and button(at, "Import valid rows").disabled


def test_cleaning_rules_show_counts_and_dropped_rows(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "dups.jsonl"
    rows = ["What is 2+2?", "what is 2 + 2", "Name a colour.", "Name a fruit.", "Name a tree."]
    src.write_text("".join(json.dumps({"prompt": p, "completion": "x"}) + "\n" for p in rows))
    at = open_page()
    at.text_input(key="upload_path").set_value(str(src)).run()
    at.multiselect(key="rules").set_value(["exact_dedup"]).run()
    button(at, "Validate").click().run()
    counts = at.dataframe[1].value
    assert counts.loc[0, ["rule", "before", "after", "dropped"]].tolist() == ["exact_dedup", 5, 4, 1]
    dropped = at.dataframe[2].value
    assert dropped.loc[0, "where"] == "line 2" and "exact duplicate of line 1" in dropped.loc[0, "reason"]
    click_import(at, store, "Import valid rows")
    (ds,) = store.list_datasets()
    assert ds["n_train"] + ds["n_test"] == 4


def test_datasets_tab_shows_lengths_fields_duplicates_and_map(store: Store, tickets: str) -> None:
    emb.dataset_embeddings(store, tickets, fake_encoder)
    at = open_page()
    table = at.dataframe[0].value
    assert table.loc[0, "name"] == "tickets" and table.loc[0, "test"] == 10
    charts = at.get("plotly_chart")
    # lengths + intent + product + urgency (a key every answer has) + the embedding map
    assert len(charts) == 5
    assert "`order_id`: " in texts(at) and "not charted" in texts(at)
    assert "Balanced training sample" in [s.value for s in at.subheader]
    cluster_table = next(d.value for d in at.dataframe if "representative" in d.value.columns)
    assert cluster_table["size"].sum() == 80
    at.selectbox(key=f"bal.key.{tickets}").set_value("intent").run()
    balance = next(d.value for d in at.dataframe if list(d.value.columns) == ["value", "pool", "sample"])
    assert balance["sample"].sum() == 70 and balance["pool"].sum() == 70


def test_embedding_map_inline_and_as_a_job(
    store: Store, tickets: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(emb, "load_encoder", lambda: fake_encoder)
    monkeypatch.setattr(emb, "INLINE_MAX", 10)
    at = open_page()
    assert len(at.get("plotly_chart")) == 4
    button(at, "Compute embedding map").click().run()
    (job,) = store.list_jobs()
    assert job["kind"] == "embed" and job["spec"] == {"dataset_id": tickets}
    assert "is queued" in texts(at)
    monkeypatch.setattr(emb, "INLINE_MAX", 300)
    store.finish_job(job["id"], "cancelled")
    at = open_page()
    button(at, "Compute embedding map").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.get("plotly_chart")) == 5
    assert emb.cached_embeddings(store, tickets, 80) is not None


def test_uploader_takes_files_without_an_extension(store: Store) -> None:
    (uploader,) = open_page().get("file_uploader")
    assert list(uploader.proto.type) == []  # no type= list that refuses a bare NAME


def test_tsv_quoting_and_csv_delimiter_are_page_options(store: Store, tmp_path: Path) -> None:
    src = tmp_path / "quotes.tsv"
    rows = ['"Hi" she said, twice', "Plain question?", '"Unclosed quote, then more', "Fourth one"]
    src.write_text("prompt\tcompletion\n" + "".join(f"{p}\t{i}\n" for i, p in enumerate(rows)))
    at = validate(open_page(), src)
    assert "All 4 rows are valid" in texts(at)
    next(c for c in at.checkbox if c.label.startswith("Cells are quoted")).check().run()
    button(at, "Validate").click().run()
    assert "cannot be read as a whole" in texts(at)  # CSV rules: '"Hi" she said' is a syntax error
    assert "CSV syntax error" in at.dataframe[1].value["reason"][0]
    semi = tmp_path / "semi.csv"
    semi.write_text("question;answer\nIs it, really?;Yes\nWho, then?;Me\n")
    at = open_page()
    at.text_input(key="upload_path").set_value(str(semi)).run()
    select(at, "Delimiter").set_value("semicolon (;)").run()
    assert select(at, "Prompt column").options[-2:] == ["question", "answer"]
    button(at, "Validate").click().run()
    assert "All 2 rows are valid" in texts(at)


# ------------------------------------------------------------- view-model helpers (no page)
def test_long_and_odd_upload_names_are_shortened_keeping_the_extension(store: Store) -> None:
    from engine.ui import data as dv

    data = b'{"prompt": "x"}\n'
    path = dv.save_upload(store, "a" * 300 + ".jsonl", data, actor=ADMIN)  # was OSError: File name too long
    assert path.exists() and path.name.endswith("a.jsonl") and len(path.name.encode()) <= 100
    path = dv.save_upload(store, "é" * 300 + ".tsv", b"prompt\tx\n", actor=ADMIN)  # 2 bytes a character
    assert path.exists() and path.suffix == ".tsv" and len(path.name.encode()) <= 100
    assert dv.upload_name("../../etc/SMSSpamCollection") == "SMSSpamCollection"  # no extension kept as is
    assert dv.upload_name("my data (1).csv") == "my_data_1.csv"
    assert dv.upload_name("...") == "upload" and dv.upload_name("x." + "y" * 40) == "x." + "y" * 40


def test_label_first_tsv_is_mapped_by_name_and_imported_as_a_label_task(store: Store) -> None:
    at = validate(open_page(), DATA / "good" / "sms_spam.tsv")  # columns: Label, Message
    assert select(at, "Prompt column").value == "Message" and select(at, "Answer column").value == "Label"
    select(at, "Answer kind").set_value("label").run()
    at.text_input(key="task_label").set_value("ham, spam").run()
    button(at, "Validate").click().run()
    assert "All 10 rows are valid" in texts(at)
    click_import(at, store, "Import (strict)")
    (ds,) = store.list_datasets()
    assert {e["reference"] for e in store.get_examples(ds["id"])} == {"ham", "spam"}


def test_columns_are_guessed_from_names_then_content() -> None:
    from engine.data.columns import guess_columns

    assert guess_columns(["label", "sentence"]) == {"prompt": "sentence", "answer": "label"}
    assert guess_columns(["Label", "Message"]) == {"prompt": "Message", "answer": "Label"}
    assert guess_columns(["id", "review_text", "Category"]) == {"prompt": "review_text", "answer": "Category"}
    # Kaggle's spam.csv: v1 (ham/spam), v2 (the text). Nothing in the names; the content says it.
    rows = [
        {"v1": "spam" if i % 4 == 0 else "ham", "v2": f"Message number {i} with some words in it", "id": i}
        for i in range(40)
    ]
    assert guess_columns(["v1", "v2", "id"], rows) == {"prompt": "v2", "answer": "v1"}
    # Free text with no label-like column: prompts only; an id column is never the answer.
    rows = [{"id": str(i % 3), "body": f"A long enough question, number {i}?"} for i in range(20)]
    assert guess_columns(["id", "body"], rows) == {"prompt": "body", "answer": None}
    assert guess_columns([]) == {"prompt": None, "answer": None}


def test_prompt_template_is_multi_line_and_checked(store: Store) -> None:
    at = open_page()
    at.text_input(key="upload_path").set_value(str(DATA / "good" / "qa.csv")).run()
    at.text_area(key="template").set_value("{input:>50}").run()
    assert any("task.prompt_template" in e.value and "format specs" in e.value for e in at.error)
    at.text_area(key="template").set_value("Answer briefly.\n\nQ: {input}\nA:").run()
    button(at, "Validate").click().run()
    click_import(at, store, "Import (strict)")
    (ds,) = store.list_datasets()
    prompts = [e["prompt"] for e in store.get_examples(ds["id"])]
    assert "Answer briefly.\n\nQ: What is the capital of France?\nA:" in prompts


def test_a_split_refused_for_near_duplicates_names_the_threshold_the_page_offers(
    store: Store, tmp_path: Path
) -> None:
    from engine.data.importing import DEDUP_THRESHOLD_LABEL

    src = tmp_path / "capitals.jsonl"
    countries = ["France", "Spain", "Italy", "Peru", "Chile", "Japan"]
    prompts = [f"Please tell me what the capital city of {c} is, thanks." for c in countries]
    src.write_text("".join(json.dumps({"prompt": p, "completion": "x"}) + "\n" for p in prompts))
    at = validate(open_page(), src)
    click_import(at, store, "Import (strict)")
    refused = next(e.value for e in at.error if "Nothing was imported" in e.value)
    assert f"Raise '{DEDUP_THRESHOLD_LABEL}' (now 0.6" in refused
    assert store.list_datasets() == []
    at.number_input(key="dedup_threshold").set_value(0.9).run()
    assert next(n for n in at.number_input if n.key == "dedup_threshold").label == DEDUP_THRESHOLD_LABEL
    click_import(at, store, "Import (strict)")
    (ds,) = store.list_datasets()
    assert ds["n_test"] == 1


def test_import_button_queues_a_job_whose_progress_and_outcome_the_page_shows(store: Store) -> None:
    at = validate(open_page(), DATA / "good" / "qa.csv")
    button(at, "Import (strict)").click().run()
    assert not at.exception, [e.value for e in at.exception]
    (job,) = store.list_jobs()
    assert (job["kind"], job["status"]) == ("import", "queued")
    spec = job["spec"]
    assert spec["path"] == str(DATA / "good" / "qa.csv")
    assert (spec["mode"], spec["test_size"]) == ("strict", 1)
    assert spec["mapping"] == {"prompt": "question", "completion": "answer"} and spec["task"]["name"] == "qa"
    assert store.list_datasets() == []  # the page imported nothing itself
    assert "is queued" in texts(at)
    assert button(at, "Import (strict)").disabled and button(at, "Import valid rows").disabled
    # What a running worker reports shows up as the page reruns (the fragment, every second).
    store.set_progress(job["id"], 0.4, "finding near-duplicates among 6 prompts")
    at.run()
    (bar,) = at.get("progress")
    assert bar.proto.value == 40 and "finding near-duplicates" in bar.proto.text
    run_queued(store, "import")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    (ds,) = store.list_datasets()
    assert "Imported as qa v1" in texts(at) and not at.get("progress")
    assert f"· {ds['id']} ·" in next(s for s in at.selectbox if s.label == "Dataset").format_func(ds["id"])


def test_a_cancelled_import_job_says_so_and_the_buttons_come_back(store: Store) -> None:
    from engine import jobs

    at = validate(open_page(), DATA / "good" / "qa.csv")
    button(at, "Import valid rows").click().run()
    (job,) = store.list_jobs()
    jobs.cancel_job(store, job["id"], actor=ADMIN)
    at.run()
    assert any("cancelled: nothing was written" in e.value for e in at.error)
    assert not button(at, "Import (strict)").disabled and store.list_datasets() == []
    # A job this workspace does not have (the sidebar switched workspaces) is forgotten quietly.
    at.session_state["import_job"] = "job-from-another-workspace"
    at.run()
    assert not at.exception and not button(at, "Import (strict)").disabled
