"""Benchmarks: each script measures aklited against a baseline; ``run.py`` runs them all."""
