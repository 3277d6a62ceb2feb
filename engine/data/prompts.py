"""How a task's prompt is built from one input (shared by data, teachers, training, evaluation)."""

from __future__ import annotations

import functools
from typing import Any

from engine.specs import template_problem

_template_problem = functools.lru_cache(maxsize=64)(template_problem)  # once per template, not per row


def render_prompt(template: str, input_text: str) -> str:
    """Fill a task's prompt template with one input.

    ``{input}`` is replaced by the input; ``{{`` and ``}}`` stand for literal braces, as in
    :meth:`str.format`. Nothing else is formatted (see :func:`engine.specs.template_problem`).

    Raises:
        ValueError: the template is not one :class:`~engine.specs.TaskSpec` accepts.
    """
    problem = _template_problem(template)
    if problem:
        raise ValueError(f"prompt template {problem}")
    return template.format(input=input_text)


def chat_messages(prompt: str, system_prompt: str = "") -> list[dict[str, str]]:
    """A rendered prompt as chat messages: the system prompt (if any), then the user turn."""
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [*messages, {"role": "user", "content": prompt}]


def has_chat_template(tokenizer: Any) -> bool:
    """Whether the tokenizer renders chats itself (then its text is tokenized as is)."""
    return bool(getattr(tokenizer, "chat_template", None))


def render_messages(tokenizer: Any, messages: list[dict[str, Any]]) -> str:
    """The prompt text of a chat: the chat template when the tokenizer has one, else the
    message contents joined by blank lines.

    A template writes every special token the model expects (BOS included, or not), so its
    text must be tokenized with ``add_special_tokens=False``, as ``apply_chat_template``
    itself and TRL do (see :func:`has_chat_template`); plain joined text gets the
    tokenizer's usual special tokens.
    """
    if has_chat_template(tokenizer):
        return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
    return "\n\n".join(str(m.get("content") or "") for m in messages)
