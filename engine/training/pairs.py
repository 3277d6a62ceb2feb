"""Preference pairs for DPO distillation: the teacher's good answer over the student's bad one.

After SFT the student still gets some training prompts wrong. Each such prompt makes one
pair: *chosen* is the teacher answer that passed curation, *rejected* is what the SFT student
itself answered. Learning from its own mistakes (on-policy negatives) is what makes DPO after
SFT useful; pairs where the student was already right would only teach noise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from engine.data.validate import parse_output
from engine.scoring.metrics import exact_match, normalize_ws
from engine.specs import TaskSpec

RuleFn = Callable[[str], bool]
"""Extra check on a student answer: True when it passes the task's rules."""


def student_fails(task: TaskSpec, output: str, reference: str, rule_fn: RuleFn | None = None) -> bool:
    """Whether a student answer fails: ill-formed, not an exact match, or breaking a rule.

    Args:
        task: The task (decides how answers parse and compare).
        output: The student's answer.
        reference: The accepted answer it is judged against.
        rule_fn: Optional extra rule check (``False`` = the answer breaks a rule).

    Returns:
        True when the answer should be a rejected example.
    """
    if not parse_output(task, output)[0]:
        return True
    if exact_match(task, output, reference) < 1.0:
        return True
    return rule_fn is not None and not rule_fn(output)


def build_dpo_pairs(
    prompts: Sequence[str],
    chosen: Sequence[str | None],
    student_outputs: Sequence[str],
    task: TaskSpec,
    rule_fn: RuleFn | None = None,
) -> list[dict[str, str]]:
    """Pair each prompt's accepted teacher answer with the student's failing answer.

    A prompt gives a pair only when the teacher answer is valid for the task (and passes
    ``rule_fn``) while the student's answer fails (:func:`student_fails`); answers that are the
    same after whitespace normalisation never pair up (there is nothing to prefer).

    Args:
        prompts: The training prompts, exactly as the student saw them.
        chosen: The curated teacher answer per prompt (``None`` or invalid: prompt skipped).
        student_outputs: The SFT student's greedy answer per prompt.
        task: The task spec.
        rule_fn: Optional rule check applied to both answers.

    Returns:
        ``{"prompt", "chosen", "rejected"}`` dicts in prompt order.

    Raises:
        ValueError: The three sequences differ in length.
    """
    if not len(prompts) == len(chosen) == len(student_outputs):
        raise ValueError(
            f"build_dpo_pairs: {len(prompts)} prompts, {len(chosen)} chosen and "
            f"{len(student_outputs)} student answers; they must match one to one"
        )
    pairs = []
    for prompt, good, bad in zip(prompts, chosen, student_outputs, strict=True):
        if good is None or not parse_output(task, good)[0] or (rule_fn is not None and not rule_fn(good)):
            continue  # an answer that failed curation is never a target
        good, bad = good.strip(), (bad or "").strip()
        if normalize_ws(good) == normalize_ws(bad) or not student_fails(task, bad, good, rule_fn):
            continue
        pairs.append({"prompt": prompt, "chosen": good, "rejected": bad})
    return pairs
