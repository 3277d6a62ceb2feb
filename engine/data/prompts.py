"""How a task's prompt is built from one input (shared by data, teachers, training, evaluation)."""

from __future__ import annotations


def render_prompt(template: str, input_text: str) -> str:
    """Fill a task's prompt template with one input.

    ``{input}`` is replaced by the input; ``{{`` and ``}}`` stand for literal braces, as in
    :meth:`str.format`.

    Raises:
        ValueError: the template names a placeholder other than ``{input}``.
    """
    try:
        return template.format(input=input_text)
    except (KeyError, IndexError) as err:
        raise ValueError(
            f"prompt template uses an unknown placeholder {err}; only {{input}} is available "
            "(write literal braces as {{ and }})"
        ) from None
