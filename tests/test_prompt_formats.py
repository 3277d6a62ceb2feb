"""The student is prompted at evaluation exactly as it was trained: raw text or chat messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datasets import Dataset
from transformers import AutoTokenizer, GenerationConfig

from engine.demo.task import DEMO_TEMPLATE, generate_examples
from engine.serving import compare
from engine.specs import StudentSpec, TinyModelSpec
from engine.store import Store
from engine.training.export import prompt_note
from engine.training.formats import (
    dpo_rows,
    example_length,
    generation_options,
    generation_prompts,
    resolve_prompt_format,
    sft_rows,
    stop_token_ids,
)
from engine.training.generate import generate
from engine.training.sft import sft_config, train_sft
from engine.training.student import build_tiny_student, load_student
from engine.training.trainer import SenseiSFTTrainer

TINY = TinyModelSpec(hidden_size=64, num_layers=2, num_heads=4, vocab_size=384)
# A ChatML-like template: rendering the prompt with a generation prompt is a prefix of the
# rendered conversation, as TRL requires for prompt/completion chats. Like many real ones it
# writes no BOS although the tokenizer adds one, and closes a turn with a special token that
# is not EOS (here the tiny tokenizer's <s>, as <|im_end|> or <end_of_turn> elsewhere).
TEMPLATE = (
    "{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}"
    "{% if m.role == 'assistant' %}<s>{% endif %}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
EOS_TEMPLATE = TEMPLATE.replace("<s>{% endif %}", "{{ eos_token }}{% endif %}")
SYSTEM = "Answer with JSON only."


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[dict[str, str]]]:
    """A tiny base without a chat template, the same base with one, and demo rows."""
    rows = [
        {"prompt": DEMO_TEMPLATE.format(input=ex["input"]), "completion": ex["reference"]}
        for ex in generate_examples(64, seed=9)
    ]
    texts = [r["prompt"] for r in rows] + [r["completion"] for r in rows] + [TEMPLATE, SYSTEM]
    raw = build_tiny_student(texts, TINY, tmp_path_factory.mktemp("raw"), seed=0)
    chat = tmp_path_factory.mktemp("chat")
    for f in raw.iterdir():
        (chat / f.name).write_bytes(f.read_bytes())
    tok = AutoTokenizer.from_pretrained(chat)
    tok.chat_template = TEMPLATE
    tok.save_pretrained(chat)
    return raw, chat, rows


def test_chat_answers_stop_at_the_templates_end_of_turn(setup: tuple[Path, Path, list]) -> None:
    _, chat, _ = setup
    tok = AutoTokenizer.from_pretrained(chat)
    assert stop_token_ids(tok, "chat") == sorted({tok.eos_token_id, tok.bos_token_id})
    assert stop_token_ids(tok, "raw") == [tok.eos_token_id]
    tok.chat_template = EOS_TEMPLATE
    assert stop_token_ids(tok, "chat") == [tok.eos_token_id]


def test_auto_picks_chat_only_when_the_tokenizer_has_a_template(setup: tuple[Path, Path, list]) -> None:
    raw, chat, _ = setup
    raw_tok, chat_tok = AutoTokenizer.from_pretrained(raw), AutoTokenizer.from_pretrained(chat)
    assert resolve_prompt_format("auto", raw_tok) == "raw"
    assert resolve_prompt_format("auto", chat_tok) == "chat"
    assert resolve_prompt_format("raw", chat_tok) == "raw"
    with pytest.raises(ValueError, match=r"student\.prompt_format: chat, but the tokenizer of tiny-x"):
        resolve_prompt_format("chat", raw_tok, "tiny-x")


def test_chat_rows_are_conversations() -> None:
    rows = sft_rows([{"prompt": "P", "completion": "C"}], "chat", SYSTEM)
    assert rows == [
        {
            "prompt": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "P"}],
            "completion": [{"role": "assistant", "content": "C"}],
        }
    ]
    pair = dpo_rows([{"prompt": "P", "chosen": "good", "rejected": "bad"}], "chat")[0]
    assert pair["prompt"] == [{"role": "user", "content": "P"}]
    assert pair["chosen"][0]["content"] == "good" and pair["rejected"][0]["content"] == "bad"
    plain = sft_rows([{"prompt": "P", "completion": "C", "idx": 3}], "raw")
    assert plain == [{"prompt": "P", "completion": "C"}]


@pytest.mark.parametrize("fmt", ["raw", "chat"])
def test_generation_sees_the_prompt_tokens_training_saw(
    setup: tuple[Path, Path, list[dict[str, str]]], tmp_path: Path, fmt: str
) -> None:
    raw, chat, rows = setup
    model, tok = load_student(chat if fmt == "chat" else raw, device="cpu")
    args = sft_config(StudentSpec(save_steps=None, max_length=512), tmp_path, seed=0, report_to=[])
    trainer = SenseiSFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(sft_rows(rows[:4], fmt, SYSTEM)),  # type: ignore[arg-type]
        processing_class=tok,
    )
    prompts = generation_prompts(tok, [r["prompt"] for r in rows[:4]], fmt, SYSTEM)  # type: ignore[arg-type]
    options = generation_options(tok, fmt)  # type: ignore[arg-type]
    for i, prepared in enumerate(trainer.train_dataset):
        labels = prepared["labels"]
        n_prompt = next(j for j, label in enumerate(labels) if label != -100)
        ids = tok(prompts[i], add_special_tokens=options["add_special_tokens"])["input_ids"]
        assert prepared["input_ids"][:n_prompt] == ids
        assert (ids[0] == tok.bos_token_id) == (fmt == "raw")  # the template writes no BOS
        assert len(prepared["input_ids"]) == example_length(tok, rows[i], fmt, SYSTEM)  # type: ignore[arg-type]
        if fmt == "chat":
            assert "<|assistant|>" in prompts[i] and SYSTEM in prompts[i]


@pytest.mark.slow
def test_a_chat_student_learns_and_answers_through_its_template(
    setup: tuple[Path, Path, list[dict[str, str]]], tmp_path: Path
) -> None:
    _, chat, rows = setup
    model, tok = load_student(chat, device="cpu")
    spec = StudentSpec(max_steps=200, batch_size=16, logging_steps=10, learning_rate=3e-3, save_steps=None)
    result = train_sft(model, tok, sft_rows(rows, "chat", SYSTEM), spec, tmp_path / "t", seed=0, report_to=[])
    assert result.final_loss < 0.6 * result.first_loss
    prompts = generation_prompts(tok, [r["prompt"] for r in rows[:8]], "chat", SYSTEM)
    options = generation_options(tok, "chat", result.model)
    answers = generate(result.model, tok, prompts, max_new_tokens=80, **options)
    # The student learnt the answer after the template's assistant turn, and stops at the end
    # of turn (never trained on EOS): one JSON object, not one running on to max_new_tokens.
    assert all(a.startswith("{") and a.endswith("}") and "<|" not in a for a in answers), answers
    # Without the end-of-turn stop it never stops (EOS was never a chat training target).
    enc = tok(prompts[:1], return_tensors="pt", add_special_tokens=options["add_special_tokens"])
    for stops, stopped in ((options["stop_token_ids"], True), ([tok.eos_token_id], False)):
        config = GenerationConfig(max_new_tokens=80, do_sample=False, eos_token_id=stops, pad_token_id=0)
        new = result.model.generate(**enc, generation_config=config).shape[1] - enc["input_ids"].shape[1]
        assert (new < 80) == stopped, (stops, new)


def test_compare_and_export_ask_a_run_as_it_was_trained(store: Store) -> None:
    with store.tx() as conn:
        run_id = store.add_run(conn, None, 10, 0)
    run_dir = Path(store.get_run(run_id)["run_dir"])  # type: ignore[index]
    assert compare.run_mode(store, run_id) == "completion"  # no metadata yet: an old raw run
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metadata.json").write_text(json.dumps({"prompt_format": "chat", "system_prompt": SYSTEM}))
    assert compare.run_mode(store, run_id) == "chat"
    note = prompt_note(json.loads((run_dir / "metadata.json").read_text()))
    assert "apply_chat_template" in note and SYSTEM in note
    assert "task.prompt_template" in prompt_note({})


@pytest.mark.slow
def test_train_job_with_a_chat_student(store: Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from engine.demo.source import demo_rows
    from engine.specs import demo_spec
    from tests.test_train_job import _run_job, _setup

    monkeypatch.setenv("WANDB_MODE", "disabled")
    spec = demo_spec("fast")
    spec.task.system_prompt = SYSTEM
    rows = demo_rows(spec)
    texts = [r["prompt"] for r in rows] + [r["reference"] for r in rows] + [TEMPLATE, SYSTEM]
    # A folder the admin listed in SENSEI_MODEL_ROOTS (outside the workspace) trains as before.
    monkeypatch.setenv("SENSEI_MODEL_ROOTS", str(tmp_path / "models"))
    folder = build_tiny_student(texts, TINY, tmp_path / "models" / "student", seed=0)
    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = TEMPLATE
    tok.save_pretrained(folder)
    spec.student.model = str(folder)  # a local folder, as a user's own model would be
    spec.student.max_steps = 60
    spec.student.max_length = 192
    exp_id, _ = _setup(store, spec)
    run = _run_job(store, spec, exp_id, size=32)

    meta = json.loads((Path(run["run_dir"]) / "metadata.json").read_text())
    assert meta["prompt_format"] == "chat" and meta["system_prompt"] == SYSTEM
    assert compare.run_mode(store, run["id"]) == "chat"
    # Evaluation asked through the template: the saved student answers the same when asked so.
    out = store.list_outputs(run["id"])[0]
    model, tok = load_student(Path(run["run_dir"]) / "model")
    prompts = generation_prompts(tok, [out["prompt"]], "chat", SYSTEM)
    # The saved generation config carries the end of turn, so plain generate() stops there too.
    assert tok.bos_token_id in model.generation_config.eos_token_id
    options = generation_options(tok, "chat", model)
    again = generate(model, tok, prompts, spec.student.max_new_tokens, **options)
    assert again == [out["output"]] and "<|" not in out["output"]
    assert all(o["output"].startswith("{") for o in store.list_outputs(run["id"]))  # answers, not turns
