"""Counts in words for people: ``1 group``, ``2 groups``, never ``1 groups`` or ``group(s)``.

Used wherever the engine or a page prints a count next to a noun (reports, refusals, captions).
"""

from __future__ import annotations

_IRREGULAR = {"category": "categories", "was": "were", "is": "are", "match": "matches"}


def plural_word(n: int, word: str, many: str | None = None) -> str:
    """``word`` for a count of ``n``: singular for exactly 1, else ``many`` (default: an ``s``
    added, or the irregular form of a few words this codebase uses)."""
    if n == 1:
        return word
    return many or _IRREGULAR.get(word) or word + "s"


def plural(n: int, word: str, many: str | None = None) -> str:
    """``plural(1, "group") == "1 group"``, ``plural(3, "group") == "3 groups"``;
    thousands get separators (``"1,200 rows"``)."""
    return f"{n:,} {plural_word(n, word, many)}"
