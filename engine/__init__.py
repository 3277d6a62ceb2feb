"""Sensei's engine: specs, store, jobs, data, teachers, training and evaluation (no Streamlit)."""
