"""Benchmarks: commands that print numbers (run with `python -m catimg.benchmarks.<name>`)."""
