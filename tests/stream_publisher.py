"""A publisher process for the durability test and the soak:
``python tests/stream_publisher.py ENDPOINT INDEX RATE SECONDS LOG [ROWS DIM]``.

Connects an XPUB (XPUB_NODROP: a full pipe waits, nothing is dropped silently) to ENDPOINT, waits
for the collector's subscription, then sends LoRA frames of run ``stream-INDEX`` at RATE frames/s
for SECONDS (or until SIGTERM). Frame k has step k, ROWS rows with ids ``pINDEX-k-r`` and
deterministic vectors (``frame_vectors``). After each send it appends ``k crc32(payload)`` to LOG,
so a test knows exactly what was sent and can check what came back.
"""
from __future__ import annotations

import signal
import sys
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import zmq  # noqa: E402

from acestep_viz.wire import Frame, encode  # noqa: E402


def run_name(index: int) -> str:
    return f"stream-{index}"


def frame_vectors(index: int, k: int, rows: int, dim: int) -> np.ndarray:
    rng = np.random.default_rng([index, k])
    return rng.normal(0, 1, size=(rows, dim)).astype(np.float16)


def frame(index: int, k: int, rows: int, dim: int) -> Frame:
    return Frame(run=run_name(index), space="lora", step=k, vectors=frame_vectors(index, k, rows, dim),
                 ids=[f"p{index}-{k}-{r}" for r in range(rows)],
                 meta=[{"layer": "block0.to_out.0", "loss": 1.0 / (k + 1)} for _ in range(rows)], sent_at=time.time())


def main(endpoint: str, index: str, rate: str, seconds: str, log: str, rows: str = "2", dim: str = "64") -> int:
    index, rate, seconds, rows, dim = int(index), float(rate), float(seconds), int(rows), int(dim)
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    sock = zmq.Context.instance().socket(zmq.XPUB)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 1000)
    sock.setsockopt(zmq.XPUB_NODROP, 1)
    sock.connect(endpoint)
    if not sock.poll(60_000):
        print("no subscriber", flush=True)
        return 1
    sock.recv()
    waits = 0
    with open(log, "a", buffering=1) as out:
        started = time.monotonic()
        k = 0
        while not stop and time.monotonic() - started < seconds:
            parts = encode(frame(index, k, rows, dim))
            while not stop:
                try:
                    sock.send_multipart(parts, flags=zmq.NOBLOCK)
                    break
                except zmq.Again:  # the collector pushes back (or is gone): wait, never drop
                    waits += 1
                    sock.poll(50, zmq.POLLOUT)
            else:
                break
            out.write(f"{k} {zlib.crc32(parts[2])}\n")
            k += 1
            delay = started + k / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
    print(f"sent {k} frames, waited for room {waits} times", flush=True)
    sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
