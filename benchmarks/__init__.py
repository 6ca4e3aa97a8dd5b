"""Benchmarks of sigbroker side by side with raw redis-py (run ``make bench``)."""
