"""A stand-in collector for dashboard benchmarks and motion tests: a real ZeroMQ REP socket on a
loopback port, in a thread, answering the query ops the dashboard uses (snapshot, history, runs,
stats) with 3 x N synthetic points whose version and coordinates the caller controls.

A real collector is another process: its JSON work must not count as the dashboard's, so the big
part of the snapshot (the points) is encoded once per change, and replies are spliced around it.
"""
from __future__ import annotations

import json
import random
import threading
import time

import zmq

from acestep_viz.point_columns import ENCODINGS, LISTS, encode_points
from tests.support import free_port

SPACES = ("latent", "lora", "prompt")
RUN = "bench"


def points(n: int, space: str, rng: random.Random) -> dict:
    """One space's columns as the collector sends them (coordinates rounded to 4 places, as it rounds them)."""
    lora = space == "lora"
    return {"x": [round(rng.uniform(-10, 10), 4) for _ in range(n)],
            "y": [round(rng.uniform(-10, 10), 4) for _ in range(n)],
            "id": [f"clip_{i % 300:04d}" for i in range(n)], "step": [i // 3 for i in range(n)],
            "loss": [rng.random() for _ in range(n)] if lora else [None] * n,
            "timestep": [rng.uniform(0, 1000) for _ in range(n)] if lora else [None] * n,
            "layer": [f"transformers.transformer_blocks.{i % 3 * 11}.attn.to_out.0" for i in range(n)] if lora
            else [None] * n,
            "prompt": [f"genre {i % 7}, mood {i % 5}, {90 + i % 60} bpm" for i in range(n)]}


class FakeCollector:
    """``version`` goes up with ``bump``; ``move`` also gives every point new coordinates (a refit)."""

    def __init__(self, n: int, seed: int = 0):
        self.rng = random.Random(seed)
        self.spaces = {s: {"buffered": n, "projected": n, "projected_at": 1.0, "last_step": n, "method": "pacmap",
                           "points": points(n, s, self.rng)} for s in SPACES}
        self.version = 100  # the history lists the 100 newest versions, as a full one does
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        self._lock = threading.Lock()
        self._spaces_json = self._encoded()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _encoded(self) -> dict[str, str]:
        """The spaces' JSON per encoding the dashboard may ask for, as the collector sends them."""
        return {encoding: json.dumps({name: {**space, "points": encode_points(space["points"], encoding)}
                                      for name, space in self.spaces.items()}) for encoding in ENCODINGS}

    def bump(self) -> int:
        with self._lock:
            self.version += 1
            return self.version

    def move(self, shift: float = 3.0) -> int:
        """A full refit: every point moves by ``shift`` along x and y, and the version goes up."""
        with self._lock:
            for space in self.spaces.values():
                space["points"]["x"] = [round(x + shift, 4) for x in space["points"]["x"]]
                space["points"]["y"] = [round(y + shift, 4) for y in space["points"]["y"]]
            self._spaces_json = self._encoded()
            self.version += 1
            return self.version

    def answer(self, request: dict) -> dict:
        op = request.get("op")
        if op == "history":
            if request.get("version") is not None:
                return {"ok": False, "error": "no history frames here", "reason": "not_found"}
            return {"ok": True, "frames": [{"version": v, "step": v * 10, "neighbour_overlap": 0.7, "lora_drift": 0.1}
                                           for v in range(self.version + 1)[-100:]]}
        if op == "runs":
            return {"ok": True, "runs": [{"run": RUN}]}
        if op == "stats":
            return {"ok": True, "runs": {RUN: {s: {"buffered": v["buffered"], "projected": v["projected"]}
                                               for s, v in self.spaces.items()}}}
        if op != "snapshot":
            return {"ok": False, "error": f"the fake collector does not answer {op!r}", "reason": "bad_request"}
        counts = {s: {"buffered": v["buffered"], "projected": v["projected"]} for s, v in self.spaces.items()}
        reply = {"ok": True, "version": self.version, "run": RUN, "paused": False, "warming_up": False,
                 "counts": counts, "last_seen": time.time(), "last_step": self.version}
        if request.get("since") == self.version:
            return {**reply, "changed": False}
        return {**reply, "changed": True, "spaces": None}

    def _serve(self) -> None:
        sock = zmq.Context.instance().socket(zmq.REP)
        sock.bind(self.endpoint)
        try:
            while not self._stop.is_set():
                if sock.poll(50):
                    request = json.loads(sock.recv())
                    with self._lock:
                        reply = self.answer(request)
                        spaces_json = self._spaces_json[request.get("encoding", LISTS)]
                    with_points = "spaces" in reply
                    reply.pop("spaces", None)
                    head = json.dumps(reply)
                    sock.send((head[:-1] + ', "spaces": ' + spaces_json + "}" if with_points else head).encode())
        finally:
            sock.close(linger=0)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)
