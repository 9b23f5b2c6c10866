"""The demo's two runs to compare: the same twin, the same clips, two learning rates.

Users compare runs that differ in one setting on the same data set, so the second run's clips
carry the same keys as the first's and the dashboard can link them across the runs.
"""
from __future__ import annotations

COMPARE_FACTOR = 4  # the second run's learning rate is this many times the first's


def demo_runs(run: str, compare: bool, lr: float = 1e-3) -> list[tuple[str, float]]:
    """(run name, learning rate) of each demo run in order: ``lr`` alone, or ``lr`` and COMPARE_FACTOR x ``lr``."""
    if not compare:
        return [(run, lr)]
    rates = (lr, lr * COMPARE_FACTOR)
    return [(f"{run}-lr{rate:g}", rate) for rate in rates]
