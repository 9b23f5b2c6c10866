"""Transport: pooled 2560-d vectors per second into the collector's buffers, ours vs the seed's JSON.

Ours: the trainer plugin's Publisher (background thread, XPUB, raw float16 frames of 6 rows:
3 LoRA layers x batch 2) into a real collector process, until its stats count every row.
Records: the trainer's path, the same rows as one step record each (float32, as pooled) through
the Publisher, whose sender thread builds the frames from them and publishes them.
Seed-style: one JSON message per vector built with `.tolist()`, sent over a PUB socket to a
receiver process that `json.loads` it and makes a numpy array, until it has them all.
Same vectors, same machine, same run.

The collector runs with its default buffer (2000 rows per space), as `acestep-viz collector`
does: the LoRA ring wraps, as it does during a training run, and every row still goes through
decode, the buffer and the run store. `--buffer-size 30000` keeps every row instead; then each
row lands on memory never touched before and the figure also counts ~150 MB of first-touch
page faults, a cost a running collector pays once.

    python tests/benchmarks/transport.py [--vectors 30000] [--seed-vectors 3000] [--buffer-size N]
"""
from __future__ import annotations

import argparse
import json
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


def frames(vectors: np.ndarray) -> list[Frame]:
    out = []
    for start in range(0, len(vectors), ROWS_PER_FRAME):
        rows = vectors[start:start + ROWS_PER_FRAME]
        out.append(Frame(run="bench-transport", space="lora", step=start // ROWS_PER_FRAME,
                         ids=[f"clip{i % 2}" for i in range(len(rows))],
                         vectors=rows, meta=[{"layer": f"block{i // 2}.attn.to_out.0", "loss": 0.1, "timestep": 500.0}
                                             for i in range(len(rows))], sent_at=time.time()))
    return out


def ours(vectors: np.ndarray, buffer_size: int | None = None) -> float:
    return delivered_per_s("ours", Publisher, frames(vectors), len(vectors), buffer_size)


def records(vectors: np.ndarray) -> list[StepRecord]:
    return [StepRecord(run="bench-transport", rank=0, step=start // ROWS_PER_FRAME, micro_batch=0,
                       keys=["clip0", "clip1"], prompts=None, loss=[0.1], timesteps=[500.0, 500.0],
                       captures=[CaptureRows("lora", f"block{layer}.attn.to_out.0", 0,
                                             vectors[start + 2 * layer:start + 2 * layer + 2].astype(np.float32),
                                             order=layer) for layer in range(3)])
            for start in range(0, len(vectors) - ROWS_PER_FRAME + 1, ROWS_PER_FRAME)]


def from_records(vectors: np.ndarray, buffer_size: int | None = None) -> float:
    steps = records(vectors)
    return delivered_per_s("records", Publisher, steps, len(steps) * ROWS_PER_FRAME, buffer_size)


def delivered_per_s(label: str, sender_class, items: list, rows: int, buffer_size: int | None) -> float:
    """Rows per second from the first publish until the collector's stats count every row."""
    with quiet_collector(["--buffer-size", str(buffer_size)] if buffer_size else []) as collector:
        pause_projections(collector)
        # Room for the whole run: this measures throughput, not the bounded-memory drop policy.
        with sender_class(collector.ingest, queue_size=len(items), pending_size=len(items)) as sender:
            wait_for(lambda: sender.stats()["subscribed"], timeout=30)
            started = time.perf_counter()
            for item in items:
                sender.publish(item)
            sender.wake()
            received = lambda: query(collector.query, {"op": "stats"})["runs"].get("bench-transport", {}).get(
                "lora", {}).get("received", 0)
            wait_for(lambda: received() >= rows, timeout=300, interval=0.02)
            elapsed = time.perf_counter() - started
            busy = query(collector.query, {"op": "stats"})["ingest_busy_s"]
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


def main(n_vectors: int, n_seed: int, buffer_size: int | None = None) -> dict:
    vectors = make_vectors(max(n_vectors, n_seed))
    ours_rate = ours(vectors[:n_vectors], buffer_size)
    records_rate = from_records(vectors[:n_vectors], buffer_size)
    seed_rate = seed(vectors[:n_seed])
    results = {"transport_vectors_per_s_ours": round(ours_rate), "transport_vectors_per_s_seed": round(seed_rate),
               "transport_ratio": round(ours_rate / seed_rate, 1), "transport_dim": DIM,
               "transport_vectors_per_s_records": round(records_rate),
               "transport_ratio_records": round(records_rate / seed_rate, 1),
               "transport_buffer_size": buffer_size or "default", "ingest_vectors_per_s": round(ours_rate)}
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--seed-receiver":
        seed_receiver(int(sys.argv[2]), int(sys.argv[3]))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=30000)
    parser.add_argument("--seed-vectors", type=int, default=3000)
    parser.add_argument("--buffer-size", type=int, default=None, help="collector rows per space (default: its own)")
    args = parser.parse_args()
    record(main(args.vectors, args.seed_vectors, args.buffer_size))
