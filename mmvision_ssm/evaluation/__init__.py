"""Metrics that also return per-class values, so reports can tabulate and plot them."""
