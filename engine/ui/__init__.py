"""What the dashboard's pages draw, computed without Streamlit (the pages in ``views/`` only lay out).

* :mod:`engine.ui.common` — experiments, jobs, events, loss and curve figures, formatting;
  :mod:`engine.ui.logs` — the Runs page's log panel (newest first, searched);
* :mod:`engine.ui.launch_form` — the Launch page's form as data; :mod:`engine.ui.presets` — its
  starting points and the diff against the previous experiment;
* :mod:`engine.ui.data`, :mod:`~engine.ui.teacher`, :mod:`~engine.ui.review` — the Data, Teacher
  and Review pages' tables, previews and specs.
"""
