"""The small judge: an encoder fine-tuned on a big judge's verdicts and the SME labels.

* :mod:`engine.judges.small.model` — training and loading the classifier;
* :mod:`engine.judges.small.data` — labelled items and the held-out split;
* :mod:`engine.judges.small.report` — held-out agreement and cost per 1,000 verdicts;
* :mod:`engine.judges.small.job` — the training job;
* :mod:`engine.judges.small.flow` — in the workspace: train from a judge, then judge runs.
"""
