"""Dashboard server time per update: the poll callback plus the redraw callback, JSON included.

A fake collector (tests/fake_collector.py: a ZeroMQ REP socket on a loopback port, in a thread)
answers with a snapshot of 3 x N points whose version goes up before every poll, the frame history
(100 frames per space) and the run list, so every poll is a real update: snapshot request, history
requests, figure building and the JSON that Dash would send. Also measured: a poll when nothing
changed (what most ticks are) and a colour/filter/selection change (redraw only, points from the
server's cache).

    python tests/benchmarks/dashboard_bench.py [--points 1000]
"""
from __future__ import annotations

import argparse
import functools
import json
import statistics
import time

from acestep_viz.dashboard.cache import ReplyCache
from acestep_viz.dashboard.callbacks import poll_outputs
from acestep_viz.dashboard.client import CollectorClient
from acestep_viz.dashboard.view import View
from acestep_viz.dashboard.view_callbacks import render_outputs
from common import record
from dash.exceptions import PreventUpdate
from plotly.io.json import to_json_plotly

from tests.fake_collector import FakeCollector


def timed_ms(fn) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1]


class Browser:
    """What one browser tab keeps between callbacks, and the three kinds of server work it causes."""

    def __init__(self, client: CollectorClient):
        self.client, self.cache = client, ReplyCache()
        self.seen, self.state, self.shown = None, None, ["0 samples"] * 3

    def update(self) -> None:
        """A poll that finds a new snapshot, then the redraw it triggers."""
        out = poll_outputs(self.client, self.cache, self.seen, self.state, self.shown)
        to_json_plotly(list(out))
        self.seen, self.state = out.seen, out.status
        to_json_plotly(render_outputs(self.client, self.cache, self.seen, None, None, View()))

    def idle_poll(self) -> None:
        try:
            poll_outputs(self.client, self.cache, self.seen, self.state, self.shown)
        except PreventUpdate:  # nothing changed: the browser gets an empty 204
            pass

    def redraw(self, view: View) -> None:
        to_json_plotly(render_outputs(self.client, self.cache, self.seen, None, None, view))


def measure(n: int, rounds: int) -> dict:
    updates, unchanged, redraws = [], [], []
    with FakeCollector(n) as fake:
        browser = Browser(CollectorClient(fake.endpoint, timeout_ms=5000))
        for i in range(rounds):
            fake.bump()
            updates.append(timed_ms(browser.update))
            unchanged.append(timed_ms(browser.idle_poll))
            view = View(colour_by={"latent": "tag", "lora": "loss", "prompt": "clip"},
                        selected=frozenset({f"clip_{i % 300:04d}"}))
            redraws.append(timed_ms(functools.partial(browser.redraw, view)))
    suffix = f"{n // 1000}k"
    return {f"dashboard_callback_p95_ms_{suffix}": round(p95(updates), 1),
            f"dashboard_unchanged_poll_p95_ms_{suffix}": round(p95(unchanged), 1),
            f"dashboard_redraw_p95_ms_{suffix}": round(p95(redraws), 1)}


def main(sizes=(1000, 10000), rounds: int = 40) -> dict:
    results = {}
    for n in sizes:
        results.update(measure(n, rounds))
        print(json.dumps(results, indent=2), flush=True)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, nargs="*", default=[1000, 10000])
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    record(main(tuple(args.points), args.rounds))
