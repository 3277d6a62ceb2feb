"""Write the import test corpus: ``good/`` (one small valid file per format) and ``bad/``
(one malformed file per problem, described in ``bad/MANIFEST.json``).

The files are committed; rerun this script only to change them::

    .venv/bin/python tests/data/generate.py

It exists because some files cannot be written by hand in an editor: invalid UTF-8 bytes,
UTF-16, a byte-order mark alone, Parquet with a wrongly typed column, a saved HF dataset.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
GOOD, BAD = HERE / "good", HERE / "bad"

QA = [
    ("What is the capital of France?", "Paris"),
    ("Translate 'thank you' into German.", "Danke"),
    ("How many legs does a spider have?", "Eight"),
    ("Name the largest planet in the solar system.", "Jupiter"),
    ("What is 12 times 12?", "144"),
    ("Who wrote 'Pride and Prejudice'?", "Jane Austen"),
]

SMS = [
    ("ham", "Go until jurong point, crazy.. Available only in bugis n great world la e buffet..."),
    ("ham", "Ok lar... Joking wif u oni..."),
    ("spam", "Free entry in 2 a wkly comp to win FA Cup final tkts 21st May 2005. Text FA to 87121"),
    ("ham", '"Hey, are you coming?" she asked. Told her I\'d be late, tell the others'),
    ("ham", "U dun say so early hor... U c already then say..."),
    ("spam", 'WINNER!! As a valued network customer you have been selected to receive a "£900 prize"'),
    ("ham", "Nah I don't think he goes to usf, he lives around here though"),
    ("ham", "\"Sorry, I'll call later"),
    ("spam", "URGENT! You have won a 1 week FREE membership in our £100,000 Prize Jackpot!"),
    ("ham", "I'm gonna be home soon and i don't want to talk about this stuff anymore tonight"),
]


def jl(*rows: Any) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


def msgs(q: str, a: str | None = None, system: str | None = None) -> list[dict[str, str]]:
    out = [{"role": "system", "content": system}] if system else []
    out.append({"role": "user", "content": q})
    if a is not None:
        out.append({"role": "assistant", "content": a})
    return out


def log(q: str, a: str) -> dict[str, Any]:
    return {
        "request": {"model": "big-model", "messages": msgs(q, system="Answer briefly.")},
        "response": {
            "id": "chatcmpl-1",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": a}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 12, "completion_tokens": 2},
        },
    }


def write_good() -> None:
    shutil.rmtree(GOOD, ignore_errors=True)
    GOOD.mkdir()
    (GOOD / "alpaca.jsonl").write_text(
        jl(*({"instruction": "Answer the question.", "input": q, "output": a} for q, a in QA))
    )
    (GOOD / "alpaca_array.json").write_text(
        json.dumps([{"instruction": q, "output": a, "category": "qa"} for q, a in QA], indent=2)
    )
    (GOOD / "chat.jsonl").write_text(jl(*({"messages": msgs(q, a, "Be brief.")} for q, a in QA)))
    (GOOD / "prompt_completion.jsonl").write_text(jl(*({"prompt": q, "completion": a} for q, a in QA)))
    (GOOD / "prompts_only.jsonl").write_text(jl(*({"prompt": q} for q, _ in QA)))
    (GOOD / "logs.jsonl").write_text(jl(*(log(q, a) for q, a in QA)))
    (GOOD / "qa.csv").write_text(
        "id,question,answer\n" + "".join(f'{i},"{q}",{a}\n' for i, (q, a) in enumerate(QA))
    )
    (GOOD / "qa.tsv").write_text("prompt\tcompletion\n" + "".join(f"{q}\t{a}\n" for q, a in QA))
    table = pa.table({"question": [q for q, _ in QA], "answer": [a for _, a in QA]})
    pq.write_table(table, GOOD / "qa.parquet")
    import datasets

    ds = datasets.Dataset.from_dict({"prompt": [q for q, _ in QA], "completion": [a for _, a in QA]})
    datasets.DatasetDict({"train": ds.select(range(4)), "test": ds.select(range(4, 6))}).save_to_disk(
        str(GOOD / "hf_dataset")
    )
    # Like the UCI SMS Spam Collection: the label first, free text after, literal quotes in it.
    (GOOD / "sms_spam.tsv").write_text("Label\tMessage\n" + "".join(f"{a}\t{m}\n" for a, m in SMS))
    # Mostly good: two bad rows among valid ones (valid-only mode imports the rest).
    (GOOD / "mixed.jsonl").write_text(
        jl(
            *({"prompt": q, "completion": a} for q, a in QA[:3]),
            '{"prompt": "broken',
            {"prompt": "", "completion": "nothing"},
            *({"prompt": q, "completion": a} for q, a in QA[3:]),
        )
    )


DEEP = 20_000  # far past any recursion limit, small enough to commit


# name -> (content, manifest entry: expected kind, line (None: whole file), field, import options)
def bad_files() -> dict[str, tuple[bytes, dict[str, Any]]]:
    ok = json.dumps({"instruction": "Say hi.", "output": "Hi"})
    pc = json.dumps({"prompt": "Say hi.", "completion": "Hi"})
    files: dict[str, tuple[bytes, dict[str, Any]]] = {
        "bad_json_line.jsonl": (jl(ok, '{"instruction": "Say bye.", "output": "Bye"', ok), {}),
        "missing_field.jsonl": (jl(ok, ok, {"input": "no instruction here", "output": "x"}), {}),
        "empty_prompt.jsonl": (jl(pc, {"prompt": "   ", "completion": "x"}), {}),
        "wrong_type_number.jsonl": (jl(ok, {"instruction": 42, "output": "x"}), {}),
        "wrong_type_list.jsonl": (jl(pc, pc, pc, {"prompt": ["a", "b"], "completion": "x"}), {}),
        "answer_is_number.jsonl": (jl(pc, {"prompt": "2+2?", "completion": 4}), {}),
        "null_completion.jsonl": (jl(pc, {"prompt": "Say bye.", "completion": None}), {}),
        "not_an_object.jsonl": (jl(pc, '["Say hi.", "Hi"]'), {}),
        "unknown_keys.jsonl": (jl({"text": "hello", "label": "greeting"}), {}),
        "chat_no_user.jsonl": (
            jl(
                {"messages": msgs("Hi", "Hello")},
                {"messages": [{"role": "system", "content": "x"}, {"role": "assistant", "content": "y"}]},
            ),
            {},
        ),
        "chat_bad_role.jsonl": (
            jl({"messages": [{"role": "user", "content": "Hi"}, {"role": "bot", "content": "Hello"}]}),
            {},
        ),
        "chat_messages_not_list.jsonl": (jl({"messages": "Hi there"}), {}),
        "chat_content_number.jsonl": (jl({"messages": [{"role": "user", "content": 5}]}), {}),
        "chat_empty_messages.jsonl": (jl({"messages": msgs("Hi", "Hello")}, {"messages": []}), {}),
        "log_no_choices.jsonl": (
            jl(log("Hi", "Hello"), {**log("Bye", "x"), "response": {"choices": []}}),
            {},
        ),
        "log_missing_response.jsonl": (jl({"request": {"messages": msgs("Hi")}}), {"shape": "openai_log"}),
        "log_failed_request.jsonl": (
            jl(
                {
                    "request": {"messages": msgs("Hi")},
                    "response": {"status_code": 500, "body": {"error": "x"}},
                }
            ),
            {},
        ),
        "empty.jsonl": ("", {}),
        "bom_only.jsonl": ("\ufeff", {}),
        "utf16.jsonl": (jl(pc).encode("utf-16"), {}),
        "json_array_truncated.json": ('[\n  {"prompt": "a", "completion": "b"},\n  {"prompt": "c"\n', {}),
        "json_array_bad_item.json": (json.dumps([{"prompt": "a"}, "just a string", {"prompt": "c"}]), {}),
        "csv_missing_column.csv": (
            "question,reply\nHi?,Hello\n",
            {"mapping": {"prompt": "question", "completion": "answer"}},
        ),
        "csv_ragged_row.csv": ("prompt,completion\nHi?,Hello\nBye?,Goodbye,extra\n", {}),
        "csv_empty_prompt.csv": (
            "question,answer\nHi?,Hello\n,orphan answer\n",
            {"mapping": {"prompt": "question", "completion": "answer"}},
        ),
        "csv_unknown_columns.csv": ("a,b\n1,2\n", {}),
        "csv_bad_quote.csv": ('prompt,completion\nHi?,Hello\n"unterminated,x\n', {}),
        "tsv_duplicate_header.tsv": ("prompt\tprompt\nHi?\tHello\n", {}),
    }
    # Parser errors other than JSONDecodeError: nesting past the recursion limit (RecursionError)
    # as a line, as a .json file and inside a messages field; an integer past Python's
    # 4,300-digit guard (a plain ValueError).
    deep = "[" * DEEP + "]" * DEEP
    files["deep_nesting.jsonl"] = (jl(pc, deep, pc), {})
    files["deep_nesting.json"] = (f'[\n{{"prompt": "Say hi."}},\n{deep}\n]\n', {})
    files["deep_messages.jsonl"] = (jl(pc, pc, f'{{"messages": {deep}}}'), {})
    files["big_integer.jsonl"] = (jl(pc, f'{{"prompt": "Count.", "completion": {"9" * 5000}}}'), {})
    # Chat rows that would silently become answerless or role-swapped prompts.
    files["chat_no_assistant.jsonl"] = (jl({"messages": msgs("Hi", "Hello")}, {"messages": msgs("Bye")}), {})
    files["chat_assistant_first.jsonl"] = (
        jl(
            {"messages": msgs("Hi", "Hello")},
            {"messages": [{"role": "assistant", "content": "Paris"}, *msgs("Capital of France?")]},
        ),
        {},
    )
    # One prompt just over the default per-field limit (1,000,000 characters) among normal rows.
    files["huge_prompt.jsonl"] = (jl(pc, {"prompt": "Say " + "hi " * 333_333, "completion": "Hi"}, pc), {})
    out = {k: (v.encode() if isinstance(v, str) else v, o) for k, (v, o) in files.items()}
    # Real invalid UTF-8: a Latin-1 "café" on line 2, and in a CSV cell on line 3.
    out["undecodable.jsonl"] = (pc.encode() + b'\n{"prompt": "caf\xe9", "completion": "x"}\n', {})
    out["csv_undecodable.csv"] = (b"prompt,completion\nHi?,Hello\ncaf\xe9,x\n", {})
    return out


EXPECTED = {
    "bad_json_line.jsonl": ("bad_json", 2, None),
    "missing_field.jsonl": ("missing_field", 3, "instruction"),
    "empty_prompt.jsonl": ("empty_prompt", 2, "prompt"),
    "wrong_type_number.jsonl": ("wrong_type", 2, "instruction"),
    "wrong_type_list.jsonl": ("wrong_type", 4, "prompt"),
    "answer_is_number.jsonl": ("wrong_type", 2, "completion"),
    "null_completion.jsonl": ("wrong_type", 2, "completion"),
    "not_an_object.jsonl": ("wrong_type", 2, None),
    "unknown_keys.jsonl": ("unknown_format", 1, None),
    "chat_no_user.jsonl": ("no_user_turn", 2, "messages"),
    "chat_bad_role.jsonl": ("bad_value", 1, "messages[1].role"),
    "chat_messages_not_list.jsonl": ("wrong_type", 1, "messages"),
    "chat_content_number.jsonl": ("wrong_type", 1, "messages[0].content"),
    "chat_empty_messages.jsonl": ("no_user_turn", 2, "messages"),
    "log_no_choices.jsonl": ("missing_field", 2, "response.choices"),
    "log_missing_response.jsonl": ("missing_field", 1, "response"),
    "log_failed_request.jsonl": ("bad_value", 1, "response.status_code"),
    "empty.jsonl": ("empty_file", None, None),
    "bom_only.jsonl": ("empty_file", None, None),
    "utf16.jsonl": ("bad_encoding", None, None),
    "json_array_truncated.json": ("bad_json", 4, None),
    "json_array_bad_item.json": ("wrong_type", 2, None),
    "csv_missing_column.csv": ("missing_column", None, "answer"),
    "csv_ragged_row.csv": ("ragged_row", 3, None),
    "csv_empty_prompt.csv": ("empty_prompt", 3, "question"),
    "csv_unknown_columns.csv": ("unknown_format", None, None),
    "csv_bad_quote.csv": ("unreadable", 3, None),
    "tsv_duplicate_header.tsv": ("bad_value", 1, None),
    "undecodable.jsonl": ("undecodable", 2, None),
    "csv_undecodable.csv": ("undecodable", 3, "prompt"),
    "parquet_wrong_type.parquet": ("wrong_type", None, "prompt"),
    "parquet_corrupt.parquet": ("unreadable", None, None),
    "hf_wrong_type": ("wrong_type", None, "prompt"),
    "deep_nesting.jsonl": ("too_deep", 2, None),
    "deep_nesting.json": ("too_deep", 3, None),
    "deep_messages.jsonl": ("too_deep", 3, None),
    "big_integer.jsonl": ("bad_json", 2, None),
    "huge_prompt.jsonl": ("too_large", 2, "prompt"),
    "chat_no_assistant.jsonl": ("no_assistant_turn", 2, "messages"),
    "chat_assistant_first.jsonl": ("turn_order", 2, "messages[0].role"),
}


def write_bad() -> None:
    shutil.rmtree(BAD, ignore_errors=True)
    BAD.mkdir()
    manifest: dict[str, Any] = {}
    for name, (content, options) in bad_files().items():
        (BAD / name).write_bytes(content)
        manifest[name] = options
    pq.write_table(
        pa.table({"prompt": [1, 2, 3], "completion": ["a", "b", "c"]}), BAD / "parquet_wrong_type.parquet"
    )
    manifest["parquet_wrong_type.parquet"] = {}
    (BAD / "parquet_corrupt.parquet").write_bytes(b"PAR1 this is not really parquet")
    manifest["parquet_corrupt.parquet"] = {}
    import datasets

    datasets.Dataset.from_dict({"prompt": [1, 2], "completion": ["a", "b"]}).save_to_disk(
        str(BAD / "hf_wrong_type")
    )
    manifest["hf_wrong_type"] = {}
    for name, (kind, line, fld) in EXPECTED.items():
        manifest[name] = {"kind": kind, "line": line, "field": fld, **manifest[name]}
    assert set(manifest) == set(EXPECTED), set(manifest) ^ set(EXPECTED)
    (BAD / "MANIFEST.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    write_good()
    write_bad()
    print(f"wrote {len(list(GOOD.iterdir()))} good and {len(list(BAD.iterdir())) - 1} bad inputs")
