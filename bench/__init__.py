"""Benchmarks (not tests): each module is a script, ``python -m bench.<name>``. See README.md."""
