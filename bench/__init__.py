"""Benchmarks of the SFU: run from the repository root (see ``docs/benchmarks.md``)."""
