"""lossbench's speed benchmarks; run them all with ``python -m benchmarks`` (see benchmarks/__main__.py)."""
