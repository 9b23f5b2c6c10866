"""`make bench`: every benchmark of the project, results merged into bench-results.json."""
from __future__ import annotations

import json

import browser_bench
import collector_bench
import dashboard_bench
import health_bench
import overhead
import transport
from common import RESULTS, record

BENCHMARKS = (
    ("trainer overhead", lambda: overhead.main()),
    ("transport", lambda: transport.main(n_vectors=30000, n_seed=2000, runs=5)),
    ("collector: freshness, fit time, stability, memory", lambda: collector_bench.main()),
    ("dashboard: server time per update", lambda: dashboard_bench.main()),
    ("collector: health figures per fit", lambda: health_bench.main()),
    ("browser: poll to drawn maps, and a redraw", lambda: browser_bench.main()),
)


def main() -> None:
    for name, run in BENCHMARKS:
        print(f"== {name}", flush=True)
        record(run())
    print(f"== results ({RESULTS})")
    print(json.dumps(json.loads(RESULTS.read_text()), indent=2))


if __name__ == "__main__":
    main()
