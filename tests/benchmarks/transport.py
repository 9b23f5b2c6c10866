"""Transport: pooled 2560-d vectors per second into the collector's buffers, ours vs the seed's JSON.

Ours: the trainer plugin's Publisher (background thread, XPUB, raw float16 frames of 6 rows:
3 LoRA layers x batch 2) into a real collector process, until its stats count every row.
Records: the trainer's path, the same rows as one step record each (float32, as pooled) through
the Publisher, whose sender thread builds the frames from them and publishes them.
Seed-style: one JSON message per vector built with `.tolist()`, sent over a PUB socket to a
receiver process that `json.loads` it and makes a numpy array, until it has them all.
Same vectors, same machine, same run. Each of ``--runs`` runs (5 by default) measures all three, one
after the other, into one collector (each pass its own run name, deleted after it); the ratio of a run
is ours / seed of that run, and the figures reported are medians over the runs, with the ratio's
minimum and maximum (the machine's load moves single runs by tens of percent).

The collector runs with its default buffer (2000 rows per space), as `acestep-viz collector`
does: the LoRA ring wraps, as it does during a training run, and every row still goes through
decode, the buffer and the run store. `--buffer-size 30000` keeps every row instead; then each
row lands on memory never touched before and the figure also counts ~150 MB of first-touch
page faults, a cost a running collector pays once.

    python tests/benchmarks/transport.py [--runs 5] [--vectors 30000] [--seed-vectors 2000] [--buffer-size N]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import numpy as np
import zmq
from acestep_viz.trainer_plugin.publisher import Publisher
from acestep_viz.trainer_plugin.step_record import CaptureRows, StepRecord
from common import HERE, pause_projections, query, quiet_collector, record
from support import child_env, free_port, wait_for

from acestep_viz.wire import Frame

DIM = 2560
ROWS_PER_FRAME = 6


def make_vectors(n: int) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, DIM)).astype(np.float16)


def frames(vectors: np.ndarray, run: str) -> list[Frame]:
    out = []
    for start in range(0, len(vectors), ROWS_PER_FRAME):
        rows = vectors[start:start + ROWS_PER_FRAME]
        out.append(Frame(run=run, space="lora", step=start // ROWS_PER_FRAME,
                         ids=[f"clip{i % 2}" for i in range(len(rows))],
                         vectors=rows, meta=[{"layer": f"block{i // 2}.attn.to_out.0", "loss": 0.1, "timestep": 500.0}
                                             for i in range(len(rows))], sent_at=time.time()))
    return out


def ours(collector, vectors: np.ndarray, run: str) -> float:
    return delivered_per_s(collector, "ours", frames(vectors, run), len(vectors), run)


def records(vectors: np.ndarray, run: str) -> list[StepRecord]:
    return [StepRecord(run=run, rank=0, step=start // ROWS_PER_FRAME, micro_batch=0,
                       keys=["clip0", "clip1"], prompts=None, loss=[0.1], timesteps=[500.0, 500.0],
                       captures=[CaptureRows("lora", f"block{layer}.attn.to_out.0", 0,
                                             vectors[start + 2 * layer:start + 2 * layer + 2].astype(np.float32),
                                             order=layer) for layer in range(3)])
            for start in range(0, len(vectors) - ROWS_PER_FRAME + 1, ROWS_PER_FRAME)]


def from_records(collector, vectors: np.ndarray, run: str) -> float:
    steps = records(vectors, run)
    return delivered_per_s(collector, "records", steps, len(steps) * ROWS_PER_FRAME, run)


def delivered_per_s(collector, label: str, items: list, rows: int, run: str) -> float:
    """Rows per second from the first publish until the collector's stats count every row of ``run``;
    the run is deleted afterwards (its store would hold ~150 MB)."""
    busy_before = query(collector.query, {"op": "stats"})["ingest_busy_s"]
    # Room for the whole run: this measures throughput, not the bounded-memory drop policy.
    with Publisher(collector.ingest, queue_size=len(items), pending_size=len(items)) as sender:
        wait_for(lambda: sender.stats()["subscribed"], timeout=30)
        started = time.perf_counter()
        for item in items:
            sender.publish(item)
        sender.wake()
        received = lambda: query(collector.query, {"op": "stats"})["runs"].get(run, {}).get(
            "lora", {}).get("received", 0)
        wait_for(lambda: received() >= rows, timeout=300, interval=0.02)
        elapsed = time.perf_counter() - started
        busy = query(collector.query, {"op": "stats"})["ingest_busy_s"] - busy_before
    deleted = query(collector.query, {"op": "delete", "run": run}, timeout=30)
    if not deleted["ok"]:
        print(f"could not delete {run}: {deleted['error']}", flush=True)
    print(f"{label}: {elapsed:.2f} s for {rows} vectors; collector ingest busy {busy:.2f} s", flush=True)
    return rows / elapsed


def seed(vectors: np.ndarray) -> float:
    port = free_port()
    receiver = subprocess.Popen([sys.executable, str(HERE / "transport.py"), "--seed-receiver", str(port),
                                 str(len(vectors))], stdout=subprocess.PIPE, env=child_env(), text=True)
    sock = zmq.Context.instance().socket(zmq.PUB)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.connect(f"tcp://127.0.0.1:{port}")
    assert receiver.stdout.readline().strip() == "ready"
    time.sleep(0.5)
    started = time.time()
    for i, vector in enumerate(vectors):
        sock.send_string(json.dumps({"type": "lora", "step": i // ROWS_PER_FRAME, "layer": i % 3,
                                     "loss": 0.1, "embedding": vector.astype(np.float32).tolist()}))
    finished = float(receiver.stdout.readline())
    receiver.wait(30)
    sock.close()
    return len(vectors) / (finished - started)


def seed_receiver(port: int, expected: int) -> None:
    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.setsockopt(zmq.SUBSCRIBE, b"")
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.bind(f"tcp://127.0.0.1:{port}")
    print("ready", flush=True)
    buffer = []
    while len(buffer) < expected:
        message = json.loads(sock.recv_string())
        buffer.append(np.asarray(message["embedding"], dtype=np.float32))
    print(time.time(), flush=True)


def main(n_vectors: int, n_seed: int, buffer_size: int | None = None, runs: int = 5) -> dict:
    vectors = make_vectors(max(n_vectors, n_seed))
    rates = {"ours": [], "records": [], "seed": []}
    with quiet_collector(["--buffer-size", str(buffer_size)] if buffer_size else []) as collector:
        pause_projections(collector)
        for i in range(runs):
            rates["ours"].append(ours(collector, vectors[:n_vectors], f"bench-transport-{i}"))
            rates["records"].append(from_records(collector, vectors[:n_vectors], f"bench-transport-records-{i}"))
            rates["seed"].append(seed(vectors[:n_seed]))
            print(f"run {i + 1}/{runs}: ratio {rates['ours'][-1] / rates['seed'][-1]:.1f}", flush=True)
    results = summary(rates)
    results.update(transport_dim=DIM, transport_buffer_size=buffer_size or "default")
    print(json.dumps(results))
    return results


def summary(rates: dict[str, list[float]]) -> dict:
    """Medians over the runs; each run's ratios are taken against that run's seed rate."""
    ratios = [o / s for o, s in zip(rates["ours"], rates["seed"])]
    ratios_records = [r / s for r, s in zip(rates["records"], rates["seed"])]
    median = {name: statistics.median(values) for name, values in rates.items()}
    return {"transport_ratio": round(statistics.median(ratios), 1), "transport_ratio_min": round(min(ratios), 1),
            "transport_ratio_max": round(max(ratios), 1), "transport_runs": len(ratios),
            "transport_vectors_per_s_ours": round(median["ours"]),
            "transport_vectors_per_s_seed": round(median["seed"]),
            "transport_vectors_per_s_records": round(median["records"]),
            "transport_ratio_records": round(statistics.median(ratios_records), 1),
            "ingest_vectors_per_s": round(median["ours"])}


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--seed-receiver":
        seed_receiver(int(sys.argv[2]), int(sys.argv[3]))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=30000)
    parser.add_argument("--seed-vectors", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=5, help="runs of all three measures; medians are reported")
    parser.add_argument("--buffer-size", type=int, default=None, help="collector rows per space (default: its own)")
    args = parser.parse_args()
    record(main(args.vectors, args.seed_vectors, args.buffer_size, args.runs))
