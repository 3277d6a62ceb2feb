"""Error review: the items people look at and label, and the workspace's rules file.

* :mod:`engine.review.items` — review items (a run's or the teacher's answer with everything
  known about it), item refs, SME consensus, workspace rules;
* :mod:`engine.review.rules_file` — ``<home>/rules.yaml``: read, add and remove declarative rules;
* :mod:`engine.review.gold` — training examples where the teacher's answer differs from the gold one.

The records themselves (annotations, taxonomy, verdicts) are stored by :mod:`engine.store.review`.
"""
