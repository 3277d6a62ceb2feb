"""The built-in offline demo: a seeded extraction task and a simulated OpenAI-compatible teacher.

``engine.demo.task`` generates support messages with their ground-truth JSON;
``engine.demo.teacher_server`` serves those answers (with deliberate mistakes) over HTTP.
"""
