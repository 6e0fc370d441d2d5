"""Benchmarks of the zoo (run as modules: `python -m benchmarks.gpt_step`). Results: RESULTS.md."""
