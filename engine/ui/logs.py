"""The Runs page's log panel: which lines of a job's log to show, searched and newest first.

The page reads the log through :func:`engine.jobs.read_log` and draws what :func:`log_view`
returns; the whole file is only read when someone downloads it.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.words import plural

LOG_LINES = 40
"""Lines the panel shows at once (the newest ones)."""
SEARCH_BYTES = 2_000_000
"""The panel reads (and searches) this much of the end of a log; Download gives all of it."""


@dataclass(frozen=True)
class LogView:
    """What the log panel draws."""

    text: str
    """The lines to show, joined; newest first unless asked otherwise."""
    shown: int
    matched: int
    """Lines that contain the search text (every line when there is none)."""
    total: int

    def caption(self, query: str = "", newest_first: bool = True) -> str:
        """``Last 40 of 1,234 lines, newest first`` or ``3 of 1,234 lines contain “error”, newest first``."""
        order = "newest first" if newest_first else "oldest first"
        if query.strip():
            verb = "contains" if self.matched == 1 else "contain"
            found = f"{self.matched:,} of {plural(self.total, 'line')} {verb} “{query.strip()}”"
            cut = f" (the last {self.shown} shown)" if self.shown < self.matched else ""
            return f"{found}{cut}, {order}"
        if self.shown < self.total:
            return f"Last {self.shown} of {self.total:,} lines, {order}"
        return f"{plural(self.total, 'line')}, {order}"


def log_view(text: str, query: str = "", lines: int = LOG_LINES, newest_first: bool = True) -> LogView:
    """The last ``lines`` lines of ``text`` that contain ``query`` (case-insensitive).

    Newest first by default, so the line a user opens the panel for is the first one seen,
    not the last of a scrolled box.
    """
    every = text.splitlines()
    needle = query.strip().lower()
    matched = [line for line in every if needle in line.lower()] if needle else every
    tail = matched[-lines:] if lines > 0 else []
    if newest_first:
        tail.reverse()
    return LogView("\n".join(tail), len(tail), len(matched), len(every))
