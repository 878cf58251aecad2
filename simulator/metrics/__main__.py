"""`python -m simulator.metrics` prints docs/metrics.md from the metric table."""

from simulator.metrics.table import reference

print(reference(), end="")
