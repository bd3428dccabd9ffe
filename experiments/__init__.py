"""Runnable experiment modules: `python -m experiments.NAME --help`."""
