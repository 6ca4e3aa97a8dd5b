"""The Django app of figure 9 (``benchmarks/django_bench.py``): an order and its customer."""
