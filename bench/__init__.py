"""Benchmarks, run as modules from the checkout: ``python -m bench.<name>`` (each reports ratios measured side by side
in one run)."""
