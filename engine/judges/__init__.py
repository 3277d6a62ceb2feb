"""Judges: models that grade answers, how far to trust them, and what they let through.

* :mod:`engine.judges.judge` — LLM judges (pointwise accept/reject, pairwise A vs B);
* :mod:`engine.judges.prompts` — the prompts a judge is asked;
* :mod:`engine.judges.job` — the judge job: grade a run's (or the teacher's) answers;
* :mod:`engine.judges.pairwise` — head to head: a run against its teacher or another run;
* :mod:`engine.judges.calibration` — agreement statistics with the SMEs (kappa, rates);
* :mod:`engine.judges.report` — calibration from the store: SME labels against stored verdicts;
* :mod:`engine.judges.curation` — which teacher answers to train on (rules, judge, SME labels);
* :mod:`engine.judges.small` — the small judge: train a classifier on verdicts, then let it judge.
"""
