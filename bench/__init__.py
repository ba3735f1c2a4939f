"""``python -m bench`` (``make bench``): throughput, freshness, rebuild and memory on the embedded services.

Not part of ``make test``. See docs/benchmarks.md for what each figure means and what limits it.
"""
