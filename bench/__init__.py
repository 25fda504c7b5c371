"""Reproducible benchmark harness (issue 4): ``python -m bench``. See bench/RESULTS.md and the README."""
