"""Benchmarks of the messaging backend against the local stack (run: bench/run)."""
