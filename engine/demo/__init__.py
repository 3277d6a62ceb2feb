"""The built-in offline demo: a seeded extraction task and a simulated OpenAI-compatible teacher.

``engine.demo.task`` generates support messages with their ground-truth JSON;
``engine.demo.source`` is the ``demo`` data source (those messages with a frozen test split);
``engine.demo.simulated_teacher`` serves those answers (with deliberate mistakes) over HTTP.
"""
