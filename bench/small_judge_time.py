"""Small-judge training time: MiniLM on 1,000 demo items on a CPU, against issue 5's budget.

Issue 5 asked that the small judge (the bundled all-MiniLM-L6-v2 encoder, the default
:class:`engine.judges.small.model.SmallJudgeSpec`) train on 1,000 items on a CPU in under 3
minutes. That is a property of the machine as much as of the code, so it is measured here and
not asserted by a test (``tests/test_small_judge.py`` keeps the behavioural acceptance: it
beats the majority class and agrees with the big judge).

Run::

    .venv/bin/python bench/small_judge_time.py [--items 1000] [--budget-s 180]

The last line is ``ratio=<x>``: total seconds over the budget (target <= 1.0).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere

from engine.judges.small.model import SmallJudgeSpec, train_small_judge
from tests.test_small_judge import demo_items  # the acceptance test's items


def main(argv: list[str] | None = None) -> float:
    """Train once, print the times and ``ratio=<x>``; return the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1000, help="demo answers to judge")
    parser.add_argument("--budget-s", type=float, default=180.0, help="issue 5's budget in seconds")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        report = train_small_judge(demo_items(args.items, seed=0), SmallJudgeSpec(), Path(tmp) / "judge")
    total, train = float(report["total_seconds"]), float(report["train_seconds"])
    ratio = total / args.budget_s
    print(f"small judge: {args.items} items, {report.get('threads')} threads, default spec (MiniLM)")
    print(f"train {train:.1f} s, total {total:.1f} s, budget {args.budget_s:g} s")
    print(f"accuracy {report['accuracy']:.3f} vs majority {report['majority_baseline_accuracy']:.3f}")
    print(f"ratio={ratio:.3f}")
    return ratio


if __name__ == "__main__":
    main()
