"""Import scaling: does importing 10x more rows take about 10x longer?

Times :func:`engine.data.importing.import_dataset` (read, validate, near-duplicate groups,
grouped split, one-transaction save) on a synthetic but realistic JSONL of instruction
prompts at ``--small`` and ``--large`` rows, in one run and one process, each import in a
fresh workspace.

On a shared machine one short import can land in a quiet second and another in a busy one
(10,000 rows took 3 to 7 s within minutes of each other), so the small size is imported
``large / small`` times, half before and half after the large import, and a round compares
the large import with the small imports' mean over the same amount of work and about the same
stretch of time. The reported ratio is the median over ``--rounds`` rounds; CPU seconds (which
other processes disturb less) are reported beside it.

The data looks like an instruction-tuning set: prompts open with one of a few dozen task
phrasings ("Summarize the following ...", "Write a polite email to ...") shared by thousands
of rows, followed by 8-60 words drawn from a Zipf-distributed vocabulary, so unrelated
prompts share boilerplate shingles as real ones do. About 5% of rows are near-duplicates of
an earlier row (greeting added, words swapped or replaced, punctuation and case changed) and
1% exact copies, which the split must keep together.

Run::

    .venv/bin/python bench/import_scale.py [--small 10000] [--large 100000] [--rounds 2] [--seed 0]

Prints one line per round (the large import's and the small imports' mean wall and CPU
seconds, rows/s, near-duplicate groups, peak memory), ``cpu_scaling=<x>`` and, last,
``scaling=<x>``: median over rounds of time(large) / mean time(small) (target <= 12 for 10x
the rows: roughly linear).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere

from engine.data.importing import import_dataset
from engine.specs import TaskSpec
from engine.store import Store

OPENERS = [
    "Summarize the following text in three sentences:",
    "Write a polite email to a customer about",
    "Explain to a beginner how",
    "Translate into French, keeping names in English:",
    "Classify the sentiment of this review as positive, negative or neutral:",
    "List three risks and how to reduce each for",
    "Rewrite this paragraph in plain English:",
    "Give me a step-by-step plan for",
    "What are the main differences between",
    "Extract every date, amount and name from this message:",
    "Draft a short job posting for",
    "Suggest five names for",
    "Answer the question using only the context below.",
    "Write a Python function that",
    "Correct the grammar and spelling in:",
    "Create a weekly schedule for",
    "Compare the pros and cons of",
    "Turn these notes into a short report:",
    "Write a product description for",
    "Explain why",
    "Describe",
    "Give feedback on this essay introduction:",
    "Generate a quiz with four questions about",
    "Write a haiku about",
]
COMMON = [
    "the", "a", "an", "and", "or", "of", "to", "in", "on", "for", "with", "at", "by", "from",
    "about", "as", "into", "over", "after", "before", "under", "this", "that", "these", "those",
    "it", "its", "our", "their", "my", "your", "his", "her", "we", "they", "you", "i", "he", "she",
    "is", "are", "was", "were", "be", "been", "has", "have", "had", "do", "does", "did", "can",
    "could", "should", "would", "will", "may", "might", "must", "not", "no", "very", "more",
    "most", "some", "any", "each", "every", "all", "both", "few", "many", "much", "other", "such",
    "only", "own", "same", "so", "than", "too", "just", "new", "old", "good", "great", "small",
    "large", "long", "short", "high", "low", "first", "last", "next", "early", "late", "best",
    "better", "time", "year", "day", "week", "month", "people", "team", "company", "customer",
    "order", "product", "service", "report", "data", "plan", "price", "market", "sales", "system",
    "project", "meeting", "email", "account", "payment", "delivery",
]  # fmt: skip
_SYLLABLES = [
    "ka", "lo", "mi", "ne", "ru", "sa", "te", "vo", "zi", "an", "el", "or", "un", "ber", "dan",
    "fen", "gar", "hol", "jin", "kor", "lam", "mer", "nor", "pol", "rin", "sul", "tor", "vin",
]  # fmt: skip


def vocabulary(rng: random.Random, n: int = 6000) -> list[str]:
    """Common words first, then invented content words (2-4 syllables), in Zipf rank order."""
    words = list(dict.fromkeys(COMMON))
    seen = set(words)
    while len(words) < n:
        w = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4)))
        if w not in seen:
            seen.add(w)
            words.append(w)
    return words


def _edit(rng: random.Random, text: str) -> str:
    """A light paraphrase: a greeting, a swapped or replaced word, changed case and punctuation."""
    words = text.split()
    for _ in range(rng.randint(1, 2)):
        i = rng.randrange(len(words))
        j = min(len(words) - 1, i + 1)
        words[i], words[j] = words[j], words[i]
    if rng.random() < 0.5:
        words[rng.randrange(len(words))] = rng.choice(COMMON)
    out = " ".join(words)
    if rng.random() < 0.5:
        out = rng.choice(["Hi! ", "Please: ", "Hello, ", "Quick one - "]) + out
    if rng.random() < 0.5:
        out = out.rstrip(".?!") + rng.choice(["!", "?", " please.", ""])
    return out.lower() if rng.random() < 0.2 else out


def make_rows(n: int, seed: int = 0) -> list[dict[str, str]]:
    """``n`` prompt/completion rows (see the module docstring)."""
    rng = random.Random(seed)
    vocab = vocabulary(rng)
    weights = [1 / (rank + 1) for rank in range(len(vocab))]
    prompts: list[str] = []
    for _ in range(n):
        r = rng.random()
        if prompts and r < 0.01:
            prompts.append(rng.choice(prompts))
        elif prompts and r < 0.06:
            prompts.append(_edit(rng, rng.choice(prompts)))
        else:
            body = " ".join(rng.choices(vocab, weights, k=rng.randint(8, 60)))
            prompts.append(f"{rng.choice(OPENERS)} {body}.")
    return [{"prompt": p, "completion": f"Answer {i}: " + p[:40]} for i, p in enumerate(prompts)]


def time_import(path: Path, home: Path) -> tuple[float, float, int]:
    """Wall and CPU seconds to import ``path`` into a fresh workspace at ``home``, and the
    near-duplicate groups found."""
    store = Store(home)
    start, cpu = time.perf_counter(), time.process_time()
    dataset_id, report = import_dataset(store, path, task=TaskSpec(name="bench"), test_size=0.1)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    if dataset_id is None:
        raise SystemExit(f"import refused: {report.message}")
    return seconds, cpu, report.dup_groups


def write_jsonl(rows: list[dict[str, str]], path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    repeats = max(2, args.large // args.small)
    wall_ratios, cpu_ratios = [], []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        time_import(write_jsonl(make_rows(500, args.seed), work / "warmup.jsonl"), work / "warmup")
        small = write_jsonl(make_rows(args.small, args.seed), work / "small.jsonl")
        large = write_jsonl(make_rows(args.large, args.seed), work / "large.jsonl")

        def run(path: Path) -> tuple[float, float, int]:
            home = work / "ws"
            try:
                return time_import(path, home)
            finally:
                shutil.rmtree(home, ignore_errors=True)

        for r in range(args.rounds):
            before = [run(small) for _ in range(repeats // 2)]
            big_s, big_cpu, groups = run(large)
            smalls = before + [run(small) for _ in range(repeats - repeats // 2)]
            small_s = statistics.fmean(t[0] for t in smalls)
            small_cpu = statistics.fmean(t[1] for t in smalls)
            wall_ratios.append(big_s / small_s)
            cpu_ratios.append(big_cpu / small_cpu)
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
            print(
                f"round={r + 1} rows={args.large} seconds={big_s:.1f} cpu_seconds={big_cpu:.1f} "
                f"rows_per_s={args.large / big_s:.0f} dup_groups={groups} | rows={args.small} x{repeats} "
                f"mean_seconds={small_s:.2f} mean_cpu_seconds={small_cpu:.2f} "
                f"dup_groups={smalls[0][2]} | ratio={wall_ratios[-1]:.2f} peak_rss_mb={peak}",
                flush=True,
            )
    print(f"cpu_scaling={statistics.median(cpu_ratios):.2f}")
    print(f"scaling={statistics.median(wall_ratios):.2f}")


if __name__ == "__main__":
    main()
