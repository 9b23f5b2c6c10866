"""The demo's two runs to compare: the same twin, the same clips, two learning rates.

Users compare runs that differ in one setting on the same data set, so the second run's clips
carry the same keys as the first's and the dashboard can link them across the runs.
"""
from __future__ import annotations

BASE_LEARNING_RATE = 1e-3  # the twins' own default
COMPARE_FACTOR = 4  # the second run's learning rate is this many times the first's


def demo_runs(run: str, compare: bool) -> list[tuple[str, float | None]]:
    """(run name, learning rate) of each demo run in order; None keeps the twin's default rate."""
    if not compare:
        return [(run, None)]
    rates = (BASE_LEARNING_RATE, BASE_LEARNING_RATE * COMPARE_FACTOR)
    return [(f"{run}-lr{rate:g}", rate) for rate in rates]
