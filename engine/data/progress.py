"""Progress callbacks for long data steps: ``progress(fraction, message)``.

A step reports its own 0..1; a caller that runs it as one part of a longer whole maps that onto
its slice with :func:`span`, so a job's bar (``JobContext.progress``) moves once, end to end.
"""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[float, str], None]
"""``progress(fraction, message)``: ``fraction`` in [0, 1], ``message`` says what is being done."""


def span(progress: Progress | None, start: float, stop: float) -> Progress | None:
    """``progress`` for a part that covers ``[start, stop]`` of the whole (None stays None)."""
    if progress is None:
        return None
    outer = progress

    def report(fraction: float, message: str) -> None:
        outer(start + (stop - start) * min(1.0, max(0.0, fraction)), message)

    return report
