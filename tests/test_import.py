"""Importing data: every malformed input is refused with a clear error and writes nothing;
every supported format imports; strict and valid-only modes; content hashing and versions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.data.importers import read_records
from engine.data.importing import dataset_versions, import_dataset, import_info
from engine.data.report import ISSUE_KINDS
from engine.specs import TaskSpec
from engine.store import Store

pytestmark = pytest.mark.both_backends  # the store tests run on SQLite and PostgreSQL

DATA = Path(__file__).parent / "data"
BAD, GOOD = DATA / "bad", DATA / "good"
MANIFEST: dict[str, dict] = json.loads((BAD / "MANIFEST.json").read_text())
TASK = TaskSpec(name="qa", prompt_template="Q: {input}\nA:")
QA_MAPPING = {"prompt": "question", "completion": "answer"}


def assert_nothing_written(store: Store) -> None:
    assert store.list_datasets() == []
    with store.read() as conn:
        assert conn.execute("SELECT COUNT(*) FROM examples").fetchone()[0] == 0
    assert not (store.home / "datasets").exists()


def test_bad_corpus_is_complete() -> None:
    files = {p.name for p in BAD.iterdir()} - {"MANIFEST.json"}
    assert files == set(MANIFEST), "every file in tests/data/bad needs a MANIFEST.json entry"
    assert len(files) >= 20
    assert {m["kind"] for m in MANIFEST.values()} <= set(ISSUE_KINDS)


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_bad_input_is_refused_with_its_own_error(store: Store, name: str) -> None:
    expected = MANIFEST[name]
    dataset_id, report = import_dataset(
        store,
        BAD / name,
        task=TASK,
        mapping=expected.get("mapping"),
        shape=expected.get("shape"),
        test_size=1,
    )
    assert dataset_id is None and not report.imported
    assert report.message.startswith("Nothing was imported")
    issue = report.issues[0]
    assert (issue.kind, issue.line, issue.field) == (expected["kind"], expected["line"], expected["field"])
    text = str(issue)
    assert text.startswith(name)  # the file is named...
    if issue.line is not None:  # ...and the line/item/row...
        assert f"{issue.unit} {issue.line}" in text
    if issue.field is not None:  # ...and the field
        assert repr(issue.field) in text
    assert len(issue.reason) > 10
    assert_nothing_written(store)


def test_each_bad_input_has_a_distinct_message() -> None:
    messages = set()
    for name, m in MANIFEST.items():
        _, report = read_records(BAD / name, mapping=m.get("mapping"), shape=m.get("shape"))
        messages.add(str(report.issues[0]))
    assert len(messages) == len(MANIFEST)


GOOD_CASES = [
    ("alpaca.jsonl", "jsonl", "alpaca", None),
    ("alpaca_array.json", "json", "alpaca", None),
    ("chat.jsonl", "jsonl", "chat", None),
    ("prompt_completion.jsonl", "jsonl", "prompt_completion", None),
    ("prompts_only.jsonl", "jsonl", "prompt_completion", None),
    ("logs.jsonl", "jsonl", "openai_log", None),
    ("qa.csv", "csv", "prompt_completion", QA_MAPPING),
    ("qa.tsv", "tsv", "prompt_completion", None),
    ("qa.parquet", "parquet", "prompt_completion", QA_MAPPING),
    ("hf_dataset", "hf_disk", "prompt_completion", None),
]


@pytest.mark.parametrize(("name", "fmt", "shape", "mapping"), GOOD_CASES)
def test_every_format_imports(store: Store, name: str, fmt: str, shape: str, mapping: dict | None) -> None:
    dataset_id, report = import_dataset(store, GOOD / name, task=TASK, mapping=mapping, test_size=2, seed=1)
    assert report.ok and report.imported, report.error_text()
    assert (report.fmt, report.shape, report.rows_read, report.rows_valid) == (fmt, shape, 6, 6)
    assert dataset_id is not None
    examples = store.get_examples(dataset_id)
    assert [e["split"] for e in examples].count("test") == 2 == report.n_test
    by_input = {e["input"].splitlines()[-1]: e for e in examples}
    france = by_input["What is the capital of France?"]
    assert france["prompt"].startswith("Q: ") and france["prompt"].endswith(
        "What is the capital of France?\nA:"
    )
    assert france["reference"] == (None if name == "prompts_only.jsonl" else "Paris")
    assert france["meta"]["source"]["file"].startswith(name)
    assert import_info(store, dataset_id)["shape"] == shape


def test_chat_and_log_sources_keep_system_prompt_and_history(tmp_path: Path) -> None:
    records, _ = read_records(GOOD / "logs.jsonl")
    assert records[0]["meta"]["system"] == "Answer briefly." and records[0]["meta"]["model"] == "big-model"
    path = tmp_path / "multi.jsonl"
    turns = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": [{"type": "text", "text": "Capital of Peru?"}]},
        {"role": "assistant", "content": "Lima"},
    ]
    path.write_text(json.dumps({"messages": turns, "id": 7}) + "\n")
    [rec], report = read_records(path)
    assert report.ok
    assert rec["input"] == "User: Hi\n\nAssistant: Hello! How can I help?\n\nUser: Capital of Peru?"
    assert rec["output"] == "Lima"
    assert len(rec["meta"]["history"]) == 2 and rec["meta"]["extra"] == {"id": 7}


def test_strict_refuses_mixed_file_and_valid_only_imports_good_rows(store: Store) -> None:
    dataset_id, report = import_dataset(store, GOOD / "mixed.jsonl", task=TASK, test_size=2)
    assert dataset_id is None
    assert [(i.line, i.kind) for i in report.issues] == [(4, "bad_json"), (5, "empty_prompt")]
    assert "2 bad rows" in report.message
    assert_nothing_written(store)
    frame = report.to_frame()
    assert list(frame["line"]) == [4, 5] and set(frame.columns) >= {"file", "field", "kind", "reason"}

    dataset_id, report = import_dataset(
        store, GOOD / "mixed.jsonl", task=TASK, test_size=2, mode="valid_only"
    )
    assert dataset_id is not None and report.imported
    assert (report.rows_read, report.rows_valid, report.n_train, report.n_test) == (8, 6, 4, 2)
    assert "2 bad rows skipped" in report.message
    lines = sorted(e["meta"]["source"]["line"] for e in store.get_examples(dataset_id))
    assert lines == [1, 2, 3, 6, 7, 8]


def test_fatal_problem_refuses_even_in_valid_only_mode(store: Store) -> None:
    dataset_id, report = import_dataset(
        store, BAD / "csv_missing_column.csv", task=TASK, mapping=QA_MAPPING, mode="valid_only"
    )
    assert dataset_id is None and report.fatal
    assert_nothing_written(store)


def test_answers_must_fit_a_json_task(store: Store, tmp_path: Path) -> None:
    task = TaskSpec(name="extract", output_kind="json", json_fields=["city"])
    path = tmp_path / "extract.jsonl"
    places = ["the Eiffel Tower", "Big Ben", "the Colosseum", "the Acropolis", "Machu Picchu"]
    rows = [{"prompt": f"Where is {p}?", "completion": {"city": f"C{i}"}} for i, p in enumerate(places)]
    rows.append({"prompt": "Where is the Louvre?", "completion": "Paris, I think"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dataset_id, report = import_dataset(store, path, task=task, test_size=1)
    assert dataset_id is None
    [issue] = report.issues
    assert (issue.kind, issue.line, issue.field) == ("bad_output", 6, "completion")
    assert_nothing_written(store)
    dataset_id, report = import_dataset(store, path, task=task, test_size=1, mode="valid_only")
    assert report.rows_valid == 5
    assert json.loads(store.get_examples(dataset_id)[0]["reference"]) == {"city": "C0"}


def test_identical_content_is_one_dataset_and_changes_make_versions(store: Store, tmp_path: Path) -> None:
    first, _ = import_dataset(store, GOOD / "prompt_completion.jsonl", task=TASK, name="qa", test_size=2)
    again, report = import_dataset(store, GOOD / "prompt_completion.jsonl", task=TASK, name="qa", test_size=2)
    assert again == first and report.reused and "Already imported" in report.message
    renamed, report = import_dataset(
        store, GOOD / "prompt_completion.jsonl", task=TASK, name="other", test_size=2
    )
    assert renamed == first and "Already imported as qa v1" in report.message
    changed = tmp_path / "qa.jsonl"
    changed.write_text((GOOD / "prompt_completion.jsonl").read_text() + '{"prompt": "Is it new?"}\n')
    second, report = import_dataset(store, changed, task=TASK, test_size=2)
    assert second != first and "qa v2" in report.message
    assert [v["id"] for v in dataset_versions(store, "qa")] == [first, second]
    # A different seed freezes a different split, hence a different dataset.
    third, _ = import_dataset(
        store, GOOD / "prompt_completion.jsonl", task=TASK, name="qa", test_size=2, seed=5
    )
    assert third not in (first, second)


def test_cleaning_runs_before_the_split_and_is_reported(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "dirty.jsonl"
    topics = [
        "volcanoes",
        "tax law",
        "jazz piano",
        "sourdough",
        "satellites",
        "chess endgames",
        "moths",
        "tides",
    ]
    rows = [
        {"prompt": f"<p>Tell me about <b>{t}</b> &amp; why they matter.</p>", "completion": "A"}
        for t in topics
    ]
    rows += [rows[0], {"prompt": "Short one", "completion": ""}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rules = ["strip_markup", "exact_dedup", {"rule": "min_output_tokens", "n": 1}]
    dataset_id, report = import_dataset(store, path, task=TASK, rules=rules, test_size=2)
    assert report.imported and report.n_train + report.n_test == 8
    assert [c["dropped"] for c in report.cleaning] == [0, 1, 1]
    assert report.cleaning[0]["changed"] == 9
    assert {d["where"] for d in report.dropped} == {"line 9", "line 10"}
    assert all("<" not in e["input"] for e in store.get_examples(dataset_id))
    assert import_info(store, dataset_id)["dropped"][0]["reason"].startswith("exact duplicate of line 1")


def test_bad_arguments_raise() -> None:
    store = Store()
    with pytest.raises(ValueError, match="test_size"):
        import_dataset(store, GOOD / "qa.tsv", task=TASK, test_size=1.5)
    with pytest.raises(ValueError, match="unknown cleaning rule"):
        import_dataset(store, GOOD / "qa.tsv", task=TASK, rules=["polish"])
    with pytest.raises(ValueError, match="format"):
        read_records(GOOD / "qa.tsv", fmt="xlsx")


def test_a_bad_prompt_template_is_a_spec_error_before_reading(store: Store) -> None:
    from engine.specs import SpecError
    from engine.ui.data import make_task

    task = TaskSpec.model_construct(name="qa", prompt_template="{input.foo}", output_kind="text")
    with pytest.raises(SpecError, match=r"task\.prompt_template: .*attribute"):
        import_dataset(store, GOOD / "qa.tsv", task=task, test_size=1)
    with pytest.raises(SpecError, match=r"task\.prompt_template: .*format specs"):
        make_task("qa", "text", template="{input}{input:>5000000}")
    assert_nothing_written(store)


def test_parsed_but_deep_rows_and_answers_are_refused_not_crashed(tmp_path: Path) -> None:
    from engine.data.validate import parse_output

    path = tmp_path / "deep.jsonl"
    ok = json.dumps({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]})
    path.write_text(ok + "\n" + '{"messages": ' + "[" * 200 + "]" * 200 + "}\n")
    records, report = read_records(path)
    [issue] = report.issues
    assert (issue.kind, issue.line, issue.field) == ("too_deep", 2, "messages") and len(records) == 1
    task = TaskSpec(name="x", output_kind="json", json_fields=["n"])
    assert parse_output(task, '{"n": ' + "9" * 5000 + "}") == (False, None)
    assert parse_output(task, "[" * 100_000) == (False, None)


def test_a_huge_field_refuses_its_row_not_the_file(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "huge.jsonl"
    topics = ["volcanoes", "tax law", "jazz", "bread", "moths", "tides", "chess", "rain"]
    rows = [{"prompt": f"Tell me about {t}.", "completion": "Yes"} for t in topics]
    big = [{"role": "user", "content": "x" * 20_000_000}, {"role": "assistant", "content": "A"}]
    rows[3] = {"prompt": "Summarise this chat.", "chat": big}
    rows[5] = {"prompt": "Big answer?", "completion": "y" * 1_000_001}
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dataset_id, report = import_dataset(store, path, task=TASK, test_size=1)
    assert dataset_id is None and report.max_field_chars == 1_000_000
    assert [(i.kind, i.line, i.field) for i in report.issues] == [
        ("too_large", 4, "chat[0].content"),
        ("too_large", 6, "completion"),
    ]
    assert "20,000,000 characters" in str(report.issues[0]) and "1,000,000" in str(report.issues[0])
    assert_nothing_written(store)
    dataset_id, report = import_dataset(store, path, task=TASK, test_size=1, mode="valid_only")
    assert report.rows_valid == 6 and import_info(store, dataset_id)["max_field_chars"] == 1_000_000
    assert max(len(e["input"]) + len(e["reference"]) for e in store.get_examples(dataset_id)) < 100


def test_the_field_limit_is_a_parameter_and_csv_cells_over_128kb_are_judged_by_it(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    path.write_text(f"question,answer\nShort?,Yes\n{'q' * 200_000},No\n{'w' * 90},Maybe\n")
    records, report = read_records(path, mapping=QA_MAPPING)
    assert report.ok and len(records) == 3  # the csv module alone stops at 131,072 characters
    records, report = read_records(path, mapping=QA_MAPPING, max_field_chars=50)
    assert [(i.kind, i.line, i.field) for i in report.issues] == [
        ("too_large", 3, "question"),
        ("too_large", 4, "question"),
    ]
    assert "limit is 50 per field" in report.issues[0].reason and len(records) == 1


def test_answerless_chat_rows_are_not_all_valid_for_a_label_task(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from engine.ui.data import check_import

    monkeypatch.setenv("SENSEI_DATA_ROOTS", str(BAD))
    task = TaskSpec(name="greet", output_kind="label", labels=["Hello", "Bye"])
    check = check_import(store, BAD / "chat_no_assistant.jsonl", task=task)
    assert "All" not in check.report.message and "1 bad row" in check.report.message
    [issue] = check.report.issues
    assert str(issue) == (
        "chat_no_assistant.jsonl line 2: field 'messages': no 'assistant' turn: a chat row needs the "
        'answer as its last message (give prompts without answers as {"prompt": ...} rows)'
    )
    check = check_import(store, BAD / "chat_assistant_first.jsonl", task=task)
    assert [(i.kind, i.line, i.field) for i in check.report.issues] == [("turn_order", 2, "messages[0].role")]


SMS = GOOD / "sms_spam.tsv"
SMS_MAPPING = {"prompt": "Message", "completion": "Label"}
SPAM = TaskSpec(name="spam", output_kind="label", labels=["ham", "spam"])


def test_tsv_is_read_without_quoting_unless_asked(store: Store) -> None:
    records, report = read_records(SMS, mapping=SMS_MAPPING)
    assert report.ok and len(records) == 10, report.error_text()  # was refused whole at line 5
    assert records[3]["input"].startswith('"Hey, are you coming?" she asked.')
    assert records[7]["input"] == "\"Sorry, I'll call later" and records[7]["output"] == "ham"
    assert (report.delimiter, report.quotechar) == ("\t", "")
    _, quoted = read_records(SMS, mapping=SMS_MAPPING, quotechar='"')  # CSV rules: refused
    assert quoted.issues and quoted.issues[0].line == 5
    assert "read the file with no quote character" in quoted.issues[0].reason
    dataset_id, report = import_dataset(store, SMS, task=SPAM, mapping=SMS_MAPPING, test_size=2)
    assert dataset_id and import_info(store, dataset_id)["quotechar"] == ""


def test_csv_delimiter_and_quote_character_are_options(tmp_path: Path) -> None:
    path = tmp_path / "semi.csv"
    path.write_text("question;answer\n'Is it; really?';Yes\nSay \"hi\";Hi\n")
    records, report = read_records(path, mapping=QA_MAPPING, delimiter=";", quotechar="'")
    assert report.ok and [r["input"] for r in records] == ["Is it; really?", 'Say "hi"']
    assert (report.delimiter, report.quotechar) == (";", "'")
    path = tmp_path / "literal.csv"
    path.write_text('question,answer\n"Quoted" at the start, then more,x\n')
    records, report = read_records(path, mapping=QA_MAPPING, quotechar="")
    assert [i.kind for i in report.issues] == ["ragged_row"]  # three cells: no quotes to group them
    for bad in ({"delimiter": "ab"}, {"delimiter": "\n"}, {"quotechar": ","}, {"quotechar": "''"}):
        with pytest.raises(ValueError, match=r"delimiter|quotechar"):
            read_records(GOOD / "qa.csv", mapping=QA_MAPPING, **bad)


@pytest.mark.parametrize(
    ("source", "fmt"),
    [
        ("sms_spam.tsv", "tsv"),
        ("qa.tsv", "tsv"),
        ("qa.csv", "csv"),
        ("alpaca.jsonl", "jsonl"),
        ("alpaca_array.json", "json"),
        ("qa.parquet", "parquet"),
    ],
)
def test_files_without_an_extension_are_sniffed(tmp_path: Path, source: str, fmt: str) -> None:
    from engine.data.sniff import detect_format

    bare = tmp_path / "SMSSpamCollection"  # many public data sets ship as a bare NAME
    bare.write_bytes((GOOD / source).read_bytes())
    assert detect_format(bare) == fmt
    mapping = {"sms_spam.tsv": SMS_MAPPING, "qa.csv": QA_MAPPING, "qa.parquet": QA_MAPPING}.get(source)
    records, report = read_records(bare, mapping=mapping)
    assert report.ok and report.fmt == fmt and len(records) >= 6, report.error_text()
    txt = tmp_path / "data.txt"  # an extension that says nothing
    txt.write_bytes(bare.read_bytes())
    assert detect_format(txt) == fmt


def test_unknown_content_is_refused_by_name(tmp_path: Path) -> None:
    binary = tmp_path / "blob"
    binary.write_bytes(bytes(range(256)) * 4)
    prose = tmp_path / "README"
    prose.write_text("Just some words\nand more words\n")
    for path in (binary, prose):
        _, report = read_records(path)
        [issue] = report.issues
        assert issue.kind == "unknown_format" and str(issue).startswith(path.name)
        assert "from the name or the content" in issue.reason
    utf16 = tmp_path / "utf16"
    utf16.write_bytes((BAD / "utf16.jsonl").read_bytes())
    assert read_records(utf16)[1].issues[0].kind == "bad_encoding"
