"""Dashboard server time per update: the poll callback plus the redraw callback, JSON included.

A fake collector (a ZeroMQ REP socket on a loopback port, in a thread) answers with a snapshot
of 3 x N points that is new on every request, the frame history (100 frames per space) and the
run list, so every poll is a real update: snapshot request, history requests, figure building
and the JSON that Dash would send. Also measured: a poll when nothing changed (what most ticks
are) and a colour/filter/selection change (redraw only, points from the server's cache).

    python tests/benchmarks/dashboard_bench.py [--points 1000]
"""
from __future__ import annotations

import argparse
import functools
import json
import random
import statistics
import threading
import time

import zmq
from acestep_viz.dashboard.cache import ReplyCache
from acestep_viz.dashboard.callbacks import poll_outputs
from acestep_viz.dashboard.client import CollectorClient
from acestep_viz.dashboard.view import View
from acestep_viz.dashboard.view_callbacks import render_outputs
from common import record
from dash.exceptions import PreventUpdate
from plotly.io.json import to_json_plotly
from support import free_port

SPACES = ("latent", "lora", "prompt")


def points(n: int, space: str, rng: random.Random) -> dict:
    lora = space == "lora"
    return {"x": [rng.uniform(-10, 10) for _ in range(n)], "y": [rng.uniform(-10, 10) for _ in range(n)],
            "id": [f"clip_{i % 300:04d}" for i in range(n)], "step": [i // 3 for i in range(n)],
            "loss": [rng.random() for _ in range(n)] if lora else [None] * n,
            "timestep": [rng.uniform(0, 1000) for _ in range(n)] if lora else [None] * n,
            "layer": [f"transformers.transformer_blocks.{i % 3 * 11}.attn.to_out.0" for i in range(n)] if lora
            else [None] * n,
            "prompt": [f"genre {i % 7}, mood {i % 5}, {90 + i % 60} bpm" for i in range(n)]}


class FakeCollector:
    def __init__(self, n: int):
        rng = random.Random(0)
        self.spaces = {s: {"buffered": n, "projected": n, "projected_at": 1.0, "last_step": n,
                           "points": points(n, s, rng)} for s in SPACES}
        self.version = 0
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)

    def answer(self, request: dict) -> dict:
        if request["op"] == "history":
            return {"ok": True, "frames": [{"version": v, "step": v * 10, "neighbour_overlap": 0.7, "lora_drift": 0.1}
                                           for v in range(100)]}
        if request["op"] == "runs":
            return {"ok": True, "runs": [{"run": "bench"}]}
        counts = {s: {"buffered": v["buffered"], "projected": v["projected"]} for s, v in self.spaces.items()}
        reply = {"ok": True, "version": self.version, "run": "bench", "paused": False, "warming_up": False,
                 "counts": counts, "last_seen": time.time(), "last_step": self.version}
        if request.get("since") == self.version:
            return {**reply, "changed": False}
        return {**reply, "changed": True, "spaces": self.spaces}

    def serve(self) -> None:
        sock = zmq.Context.instance().socket(zmq.REP)
        sock.bind(self.endpoint)
        # A real collector is another process: its JSON work must not count as the dashboard's, so the
        # big part of the snapshot (the points) is encoded once, and replies are spliced around it.
        spaces_json = json.dumps(self.spaces)
        try:
            while not self.stop.is_set():
                if sock.poll(50):
                    reply = self.answer(json.loads(sock.recv()))
                    spaces = reply.pop("spaces", None)
                    head = json.dumps(reply)
                    sock.send((head[:-1] + ', "spaces": ' + spaces_json + "}" if spaces else head).encode())
        finally:
            sock.close(linger=0)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(5)


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
            fake.version += 1
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
