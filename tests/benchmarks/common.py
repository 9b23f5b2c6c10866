"""Shared pieces of the benchmarks: a real collector process and the results file."""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent.parent), str(HERE.parent)]

from support import REPO, CollectorProcess, query  # noqa: E402

RESULTS = REPO / "bench-results.json"


def record(results: dict) -> dict:
    """Merge results into bench-results.json (one flat object) and return the whole file."""
    current = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    current.update(results)
    RESULTS.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    return current


class TemporaryCollector(CollectorProcess):
    """A collector whose temporary folder (store and log) is deleted when it stops: a transport run
    alone writes ~150 MB of run store."""

    def __exit__(self, *exc):
        try:
            super().__exit__(*exc)
        finally:
            shutil.rmtree(self.store_dir.parent, ignore_errors=True)


def quiet_collector(extra_args=()) -> CollectorProcess:
    """A collector on free loopback ports with its own temporary store, deleted when it stops."""
    return TemporaryCollector(Path(tempfile.mkdtemp(prefix="avz-bench-")) / "store", extra_args=list(extra_args))


def pause_projections(collector: CollectorProcess) -> None:
    """Wait for the PaCMAP warm-up (it burns a core while it compiles), then stop fitting."""
    collector.wait_ready()
    query(collector.query, {"op": "pause"})
