"""Row shapes: turn one source row (a dict) into a :class:`~engine.data.report.Record`.

Shapes, detected from a row's keys (the first that matches):

* ``chat`` — ``messages``: a list of ``{"role", "content"}`` turns. After any system prompt
  the user speaks first; the last turn is the assistant's and is the reference answer, and the
  turn before it must be the user's. (Prompts without answers are ``prompt`` rows.)
* ``openai_log`` — ``request`` + ``response``: a logged chat-completions call. The request's
  messages are the prompt and the response's first choice the answer (the Batch API's
  ``response.body`` wrapper is understood).
* ``alpaca`` — ``instruction``, optional ``input`` (or ``context``), optional ``output`` (or
  ``response``). The prompt is the instruction, a blank line, then the input.
* ``prompt_completion`` — ``prompt``, optional ``completion``.
* ``io`` — ``input``, optional ``output`` (or ``reference``).

A field that is present must have the right type: ``"completion": null`` is an error (leave
the key out when there is no answer). An answer given as a JSON object or list is stored as
its JSON text. Keys a shape does not use are kept in ``meta["extra"]``. No text anywhere in a
row may be longer than :data:`MAX_FIELD_CHARS` (``max_field_chars`` of :func:`parse_row`): one
20 MB prompt would otherwise be stored, rendered and deduplicated like any other.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from engine.data.report import Record

MAX_FIELD_CHARS = 1_000_000
"""Longest text (in characters, about 1 MB) one field of a row may hold, by default."""
SHAPES = ("chat", "openai_log", "alpaca", "prompt_completion", "io")
"""Row shapes, in detection order."""
ROLES = ("system", "developer", "user", "assistant", "tool")
_USED = {
    "chat": {"messages"},
    "openai_log": {"request", "response"},
    "alpaca": {"instruction", "input", "context", "output", "response"},
    "prompt_completion": {"prompt", "completion"},
    "io": {"input", "output", "reference"},
}
_SURROGATE = re.compile("[\ud800-\udfff]")


class RowError(ValueError):
    """A row is refused: ``kind`` (see :data:`engine.data.report.ISSUE_KINDS`), ``field``, reason."""

    def __init__(self, kind: str, field: str | None, reason: str):
        super().__init__(reason)
        self.kind, self.field, self.reason = kind, field, reason


def type_name(value: Any) -> str:
    """JSON-ish name of a value's type, for messages (``number``, ``list``, ``null``, ...)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list | tuple):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def detect_shape(keys: set[str] | list[str]) -> str | None:
    """The shape whose identifying key(s) appear in ``keys``, or None."""
    k = set(keys)
    if "messages" in k:
        return "chat"
    if {"request", "response"} <= k:
        return "openai_log"
    for shape, key in (("alpaca", "instruction"), ("prompt_completion", "prompt"), ("io", "input")):
        if key in k:
            return shape
    return None


def _check_sizes(row: dict[str, Any], limit: int) -> None:
    """Refuse a row with any text (at any depth) longer than ``limit`` characters, naming it."""
    stack: list[tuple[str, Any]] = [(str(k), v) for k, v in row.items()]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str) and len(value) > limit:
            reason = (
                f"the text is {len(value):,} characters long; the limit is {limit:,} per field "
                "(max_field_chars)"
            )
            raise RowError("too_large", path, reason)
        if isinstance(value, dict):
            stack.extend((f"{path}.{k}", v) for k, v in value.items())
        elif isinstance(value, list | tuple):
            stack.extend((f"{path}[{i}]", v) for i, v in enumerate(value))


def _require(row: dict[str, Any], *keys: str) -> None:
    for key in keys:
        if key not in row:
            raise RowError("missing_field", key, f"missing field {key!r}")


def _check_text(value: str, field: str) -> str:
    if _SURROGATE.search(value):
        raise RowError("undecodable", field, "contains undecodable bytes (not valid UTF-8)")
    return value


def _text(row: dict[str, Any], key: str, required: bool, prompt: bool = False) -> str | None:
    """A text field: missing (error if required), wrong type (error), blank prompt (error)."""
    if key not in row:
        if required:
            raise RowError("missing_field", key, f"missing field {key!r}")
        return None
    value = row[key]
    if not isinstance(value, str):
        raise RowError("wrong_type", key, f"expected text, got {type_name(value)}")
    if prompt and not value.strip():
        raise RowError("empty_prompt", key, "the prompt is empty")
    return _check_text(value, key)


def _answer(value: Any, field: str) -> str:
    """A reference answer: text, or a JSON object/list stored as its JSON text."""
    if isinstance(value, str):
        return _check_text(value, field)
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    raise RowError("wrong_type", field, f"expected text (or a JSON object), got {type_name(value)}")


def _optional_answer(row: dict[str, Any], *keys: str) -> str | None:
    for key in keys:
        if key in row:
            return _answer(row[key], key)
    return None


def _content(msg: dict[str, Any], path: str) -> str:
    if "content" not in msg:
        raise RowError("missing_field", f"{path}.content", "missing field 'content'")
    content = msg["content"]
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        parts = []
        for j, part in enumerate(content):
            if not (
                isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)
            ):
                raise RowError("bad_value", f"{path}.content[{j}]", "only text content parts are supported")
            parts.append(part["text"])
        content = "".join(parts)
    if not isinstance(content, str):
        raise RowError("wrong_type", f"{path}.content", f"expected text, got {type_name(content)}")
    return _check_text(content, f"{path}.content")


def _turns(messages: Any, path: str) -> list[tuple[str, str]]:
    """Validated ``(role, text)`` turns of a messages list."""
    if not isinstance(messages, list):
        raise RowError("wrong_type", path, f"expected a list of messages, got {type_name(messages)}")
    if not messages:
        raise RowError("no_user_turn", path, "no messages")
    turns = []
    for i, msg in enumerate(messages):
        where = f"{path}[{i}]"
        if not isinstance(msg, dict):
            raise RowError("wrong_type", where, f"expected a message object, got {type_name(msg)}")
        if "role" not in msg:
            raise RowError("missing_field", f"{where}.role", "missing field 'role'")
        role = msg["role"]
        if not isinstance(role, str):
            raise RowError("wrong_type", f"{where}.role", f"expected text, got {type_name(role)}")
        if role not in ROLES:
            raise RowError(
                "bad_value", f"{where}.role", f"unknown role {role!r} (expected {', '.join(ROLES)})"
            )
        turns.append((role, _content(msg, where)))
    return turns


def _check_chat_order(turns: list[tuple[str, str]], path: str) -> None:
    """A chat row opens with the user (after any system prompt) and ends with the assistant's answer.

    Otherwise the transcript would silently become a prompt with no answer, or with the
    roles the wrong way round.
    """
    first = next(i for i, (role, _) in enumerate(turns) if role not in ("system", "developer"))
    if turns[first][0] != "user":
        reason = (
            f"the conversation opens with a {turns[first][0]!r} turn before any 'user' turn; after "
            "the system prompt the user speaks first"
        )
        raise RowError("turn_order", f"{path}[{first}].role", reason)
    last = len(turns) - 1
    if not any(role == "assistant" for role, _ in turns):
        reason = (
            "no 'assistant' turn: a chat row needs the answer as its last message (give prompts "
            'without answers as {"prompt": ...} rows)'
        )
        raise RowError("no_assistant_turn", path, reason)
    if turns[last][0] != "assistant":
        reason = f"the conversation ends with a {turns[last][0]!r} turn, not the assistant's answer"
        raise RowError("no_assistant_turn", f"{path}[{last}].role", reason)


def _conversation(messages: Any, path: str, allow_answer: bool) -> tuple[str, str | None, dict[str, Any]]:
    """(prompt text, answer or None, meta) of a conversation.

    A single user turn is the prompt as is; with earlier turns the prompt is the transcript
    (``User: ...`` / ``Assistant: ...``), so no context is lost.
    """
    turns = _turns(messages, path)
    if not any(role == "user" for role, _ in turns):
        raise RowError("no_user_turn", path, "no message with role 'user'")
    answer = None
    if allow_answer:  # a chat row: a whole conversation, answered
        _check_chat_order(turns, path)
        answer = turns.pop()[1]
    elif turns[-1][0] == "assistant":
        raise RowError("bad_value", path, "the request ends with an assistant turn, not the user's")
    if turns[-1][0] != "user":
        raise RowError(
            "bad_value",
            f"{path}[{len(turns) - 1}].role",
            f"the last prompt turn must be 'user', not {turns[-1][0]!r}",
        )
    if not turns[-1][1].strip():
        raise RowError("empty_prompt", f"{path}[{len(turns) - 1}].content", "the user message is empty")
    system = [text for role, text in turns if role in ("system", "developer")]
    dialogue = [(role, text) for role, text in turns if role not in ("system", "developer")]
    meta: dict[str, Any] = {}
    if system:
        meta["system"] = "\n\n".join(system)
    if len(dialogue) == 1:
        prompt = dialogue[0][1]
    else:
        meta["history"] = [{"role": r, "content": t} for r, t in dialogue[:-1]]
        prompt = "\n\n".join(f"{role.capitalize()}: {text}" for role, text in dialogue)
    return prompt, answer, meta


def _log(row: dict[str, Any]) -> tuple[str, str | None, dict[str, Any]]:
    request, response = row["request"], row["response"]
    if not isinstance(request, dict):
        raise RowError("wrong_type", "request", f"expected an object, got {type_name(request)}")
    if "messages" not in request:
        raise RowError("missing_field", "request.messages", "missing field 'messages'")
    prompt, _, meta = _conversation(request["messages"], "request.messages", allow_answer=False)
    if not isinstance(response, dict):
        raise RowError("wrong_type", "response", f"expected an object, got {type_name(response)}")
    where = "response"
    if "body" in response and "choices" not in response:  # Batch API: {"status_code", "body"}
        status = response.get("status_code", 200)
        if status != 200:
            raise RowError(
                "bad_value", "response.status_code", f"the logged request failed (status {status})"
            )
        response, where = response["body"], "response.body"
        if not isinstance(response, dict):
            raise RowError("wrong_type", where, f"expected an object, got {type_name(response)}")
    if response.get("error"):
        raise RowError("bad_value", f"{where}.error", "the logged request failed (the response is an error)")
    choices = response.get("choices")
    if not isinstance(choices, list) or not choices:
        got = "missing" if choices is None else f"{type_name(choices)} {choices!r}"[:60]
        raise RowError("missing_field", f"{where}.choices", f"no choices in the response ({got})")
    msg = choices[0].get("message") if isinstance(choices[0], dict) else None
    if not isinstance(msg, dict):
        raise RowError("missing_field", f"{where}.choices[0].message", "the first choice has no message")
    answer = _answer(msg.get("content"), f"{where}.choices[0].message.content")
    if isinstance(request.get("model"), str):
        meta["model"] = request["model"]
    if isinstance(response.get("usage"), dict):
        meta["usage"] = jsonable(response["usage"])
    return prompt, answer, meta


def jsonable(value: Any) -> Any:
    """A value safe to store as JSON (NaN becomes None; unknown types become text)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return str(value)


def parse_row(
    shape: str, row: Any, extra: dict[str, Any] | None = None, max_field_chars: int = MAX_FIELD_CHARS
) -> Record:
    """Validate one row of ``shape`` and normalise it.

    Args:
        shape: one of :data:`SHAPES`.
        row: the parsed row (must be a dict).
        extra: more fields to keep in ``meta["extra"]`` (e.g. unmapped CSV columns).
        max_field_chars: the longest text any field (or message, or extra column) may hold.

    Raises:
        RowError: the row is refused (kind, field and reason say why).
    """
    if not isinstance(row, dict):
        raise RowError("wrong_type", None, f"expected an object, got {type_name(row)}")
    _check_sizes({**row, **(extra or {})}, max_field_chars)
    meta: dict[str, Any] = {}
    if shape == "chat":
        _require(row, "messages")
        prompt, answer, meta = _conversation(row["messages"], "messages", allow_answer=True)
    elif shape == "openai_log":
        _require(row, "request", "response")
        prompt, answer, meta = _log(row)
    elif shape == "alpaca":
        instruction = _text(row, "instruction", required=True) or ""
        context = _text(row, "input" if "input" in row else "context", required=False) or ""
        if not instruction.strip() and not context.strip():
            raise RowError("empty_prompt", "instruction", "the instruction and input are both empty")
        prompt = f"{instruction.strip()}\n\n{context.strip()}".strip()
        meta = {"instruction": instruction, "context": context}
        answer = _optional_answer(row, "output", "response")
    elif shape == "prompt_completion":
        prompt = _text(row, "prompt", required=True, prompt=True) or ""
        answer = _optional_answer(row, "completion")
    elif shape == "io":
        prompt = _text(row, "input", required=True, prompt=True) or ""
        answer = _optional_answer(row, "output", "reference")
    else:
        raise ValueError(f"unknown row shape {shape!r} (one of {', '.join(SHAPES)})")
    leftover = {k: v for k, v in row.items() if k not in _USED[shape]}
    leftover.update(extra or {})
    if leftover:
        meta["extra"] = jsonable(leftover)
    return Record(input=prompt, output=answer, meta=meta)
