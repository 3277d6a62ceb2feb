"""How the student sees a prompt: the rendered prompt as plain text, or chat messages.

An ``-Instruct`` Hub student was tuned on its chat template; feeding it bare text throws that
away. With ``student.prompt_format: chat`` (what ``auto`` picks when the tokenizer has a chat
template) every training row becomes a conversation, the task's system prompt and the
rendered prompt as the user turn, the teacher's answer as the assistant turn, and TRL
applies the template and keeps the loss on the answer. Evaluation, the DPO stage's own
answers and the Compare page ask through the same template, so the student is always
prompted exactly as it was trained. The tiny student has no template and stays on ``raw``.
"""

from __future__ import annotations

from typing import Any, Literal

from engine.data.prompts import chat_messages, has_chat_template, render_messages

PromptFormat = Literal["raw", "chat"]


def resolve_prompt_format(requested: str, tokenizer: Any, model_name: str = "the student") -> PromptFormat:
    """``raw`` or ``chat`` for ``student.prompt_format`` (``auto``, ``raw`` or ``chat``).

    Raises:
        ValueError: ``chat`` for a tokenizer without a chat template (the message says what to do).
    """
    has_template = has_chat_template(tokenizer)
    if requested == "auto":
        return "chat" if has_template else "raw"
    if requested == "chat" and not has_template:
        raise ValueError(
            f"student.prompt_format: chat, but the tokenizer of {model_name} has no chat template; "
            "use raw (or auto), or a model that ships one"
        )
    if requested not in ("raw", "chat"):
        raise ValueError(f"student.prompt_format: unknown format {requested!r}")
    return requested  # type: ignore[return-value]


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def sft_rows(rows: list[dict[str, Any]], fmt: PromptFormat, system_prompt: str = "") -> list[dict[str, Any]]:
    """Prompt/completion rows as TRL trains on them (conversational for ``chat``)."""
    if fmt == "raw":
        return [{"prompt": r["prompt"], "completion": r["completion"]} for r in rows]
    return [
        {"prompt": chat_messages(r["prompt"], system_prompt), "completion": _assistant(r["completion"])}
        for r in rows
    ]


def dpo_rows(pairs: list[dict[str, Any]], fmt: PromptFormat, system_prompt: str = "") -> list[dict[str, Any]]:
    """Prompt/chosen/rejected rows as TRL's DPO trains on them (conversational for ``chat``)."""
    if fmt == "raw":
        return [{"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]} for p in pairs]
    return [
        {
            "prompt": chat_messages(p["prompt"], system_prompt),
            "chosen": _assistant(p["chosen"]),
            "rejected": _assistant(p["rejected"]),
        }
        for p in pairs
    ]


def generation_prompts(
    tokenizer: Any, prompts: list[str], fmt: PromptFormat, system_prompt: str = ""
) -> list[str]:
    """The text to continue for each rendered prompt, as the student was trained to see it."""
    if fmt == "raw":
        return list(prompts)
    return [render_messages(tokenizer, chat_messages(p, system_prompt)) for p in prompts]


def example_length(tokenizer: Any, row: dict[str, Any], fmt: PromptFormat, system_prompt: str = "") -> int:
    """Tokens of one training example (prompt, answer and end of turn) in format ``fmt``."""
    if fmt == "raw":
        return len(tokenizer(row["prompt"] + row["completion"])["input_ids"]) + 1  # + EOS
    messages = chat_messages(row["prompt"], system_prompt) + _assistant(row["completion"])
    ids = tokenizer.apply_chat_template(messages, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):  # a BatchEncoding in transformers 5
        ids = ids["input_ids"]
    return len(ids)


def end_of_turn_id(tokenizer: Any) -> int | None:
    """The token a chat template closes an assistant turn with (``<|im_end|>``, ``<|eot_id|>``,
    ``<end_of_turn>``, ...), or None when it writes nothing after the answer."""
    marker = "\u2063answer\u2063"  # a string no template writes itself
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": marker}]
    try:
        text = str(tokenizer.apply_chat_template(messages, tokenize=False))
    except Exception:  # a template that refuses this conversation shape
        return None
    after = text.split(marker, 1)[1].strip() if marker in text else ""
    ids = tokenizer(after, add_special_tokens=False)["input_ids"] if after else []
    return int(ids[0]) if ids else None


def stop_token_ids(tokenizer: Any, fmt: PromptFormat, model: Any = None) -> list[int]:
    """Tokens that end an answer: EOS, the model's own generation EOS list, and for ``chat``
    the template's end of turn. TRL appends EOS to raw completions only, so a chat student
    learns to stop with whatever its template closes a turn with."""
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured])
    if fmt == "chat":
        ids.add(end_of_turn_id(tokenizer))
    return sorted(i for i in ids if i is not None)


def generation_options(tokenizer: Any, fmt: PromptFormat, model: Any = None) -> dict[str, Any]:
    """``generate`` keyword arguments for prompts from :func:`generation_prompts`."""
    return {
        "add_special_tokens": fmt == "raw" or not has_chat_template(tokenizer),
        "stop_token_ids": stop_token_ids(tokenizer, fmt, model),
    }


def set_stop_tokens(model: Any, tokenizer: Any, fmt: PromptFormat) -> None:
    """Record the stop tokens in the model's ``generation_config``, so a saved or served
    student (``transformers serve``, plain ``generate``) stops where evaluation did."""
    config = getattr(model, "generation_config", None)
    if config is not None:
        config.eos_token_id = stop_token_ids(tokenizer, fmt, model)
