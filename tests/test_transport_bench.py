"""The transport benchmark's summary: each run's ratio against its own JSON rate, the median and spread."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "benchmarks"))

from transport import summary  # noqa: E402


def test_summary_pairs_each_run_with_its_own_seed_rate_and_reports_the_median_and_spread():
    # The load of the machine halves both rates in runs 2 and 4: the ratios stay 100, 120, 100, 140, 80.
    rates = {"ours": [50_000, 30_000, 50_000, 35_000, 40_000], "seed": [500, 250, 500, 250, 500],
             "records": [10_000, 5_000, 10_000, 5_000, 10_000]}
    result = summary(rates)
    assert result["transport_runs"] == 5
    assert (result["transport_ratio"], result["transport_ratio_min"], result["transport_ratio_max"]) == (100, 80, 140)
    assert result["transport_vectors_per_s_ours"] == result["ingest_vectors_per_s"] == 40_000
    assert result["transport_vectors_per_s_seed"] == 500 and result["transport_ratio_records"] == 20
