"""Teachers: the models whose answers become training data.

* :mod:`engine.teacher.client` — OpenAI-compatible chat client (cached, concurrent, cost-counted);
* :mod:`engine.teacher.cache` — the on-disk request cache shared by teachers and judges;
* :mod:`engine.teacher.ratelimit` — requests/tokens-per-minute token buckets;
* :mod:`engine.teacher.keys` — the API key names an admin declared (``SENSEI_KEY_ENVS``), the only ones read;
* :mod:`engine.teacher.job` — the teacher job (dataset + an answer for every prompt);
* :mod:`engine.teacher.local` — a local Hugging Face model as the teacher;
* :mod:`engine.teacher.playground` — try prompt and model variants on a few rows.
"""
