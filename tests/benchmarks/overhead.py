"""Trainer overhead: twin training-step time with the tap off, ours on, and the seed-style hooks.

All capture the same modules (latent encoder per clip, text encoder, three LoRA layers). "ours"
captures every space every step (``frozen_once=False``, the worst case); "default" runs the
default settings, where the frozen spaces (latent, prompt) are sent once per clip and a clip
already sent costs no pooling, so after the first epoch only the LoRA layers cost anything.
Each round runs one step of each mode in random order; the overhead is the median over rounds of
the step-time ratio to that round's tap-off step, so the slow phases of a noisy machine cancel
out. The publisher stays connected for the whole run, as in training.
The seed-style path is what the original tab did: in the hook, `.tolist()` the output and send
JSON over a socket, synchronously on the training thread (pooled first, else it crashes on
variable shapes).

    python tests/benchmarks/overhead.py [--rounds 150] [--block 1]
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import time

import torch
import zmq

from common import pause_projections, quiet_collector, record
from trainer_plugin import attach
from trainer_plugin.demo import SyntheticSongs, build_pipeline, collate
from trainer_plugin.publisher import Publisher


class KeptOpen:
    """One publisher for the whole run, as in training; a Tap closing between blocks leaves it open."""

    def __init__(self, publisher: Publisher):
        self.publisher = publisher
        self.publish, self.stats = publisher.publish, publisher.stats

    def close(self):
        pass


class SeedStyleHooks:
    """The seed's capture: synchronous .tolist() + JSON + send inside every hook."""

    def __init__(self, modules: dict, endpoint: str):
        self.sock = zmq.Context.instance().socket(zmq.PUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)
        self.handles = [m.register_forward_hook(self._hook(name)) for name, m in modules.items()]

    def _hook(self, name):
        def hook(module, args, output):
            x = getattr(output, "last_hidden_state", output)
            if isinstance(x, (tuple, list)):
                x = x[0]
            x = x.detach().float()
            pooled = x.mean(dim=-1) if x.dim() == 4 else x.mean(dim=1) if x.dim() == 3 else x
            payload = {"type": name, "timestamp": time.time(), "embedding": pooled.cpu().numpy().tolist()}
            self.sock.send_string(json.dumps(payload))
        return hook

    def close(self):
        for h in self.handles:
            h.remove()
        self.sock.close()


def make_batches(n: int, batch_size: int = 2) -> list[dict]:
    data = SyntheticSongs()
    order = list(range(len(data)))
    return [collate([data[order[(i * batch_size + j) % len(order)]] for j in range(batch_size)]) for i in range(n)]


def train_step(pipeline, optimizer, batch, step, tap=None) -> float:
    started = time.perf_counter()
    if tap is not None:
        with tap.step(step, 0, batch):
            loss = pipeline.training_step(batch, step)
    else:
        loss = pipeline.training_step(batch, step)
    loss.backward()  # outside the armed block: checkpoint recompute is not captured
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - started


def paired_overhead(times: dict, mode: str) -> float:
    """Median over rounds of (mode's step / the off step of the same round) - 1, in percent.

    Steps of one round run back to back, so slow phases of a noisy machine cancel out."""
    return 100 * (statistics.median(t / off for t, off in zip(times[mode], times["off"])) - 1)


def main(rounds: int = 150, block: int = 1) -> dict:
    torch.manual_seed(0)
    torch.set_num_threads(1)  # as the demo runs: OpenMP spin-waits against the collector otherwise
    pipeline = build_pipeline(every_plot_step=10**9)
    pipeline.plot_step = lambda *a, **k: None  # evaluation is not what we time
    pipeline.log = lambda *a, **k: None  # no Trainer attached in this hand-written loop
    optimizer = torch.optim.AdamW([p for p in pipeline.parameters() if p.requires_grad], lr=1e-4)
    batches = make_batches(64)
    times = {"off": [], "ours": [], "default": [], "seed": []}
    sent_frozen: set = set()  # the default mode's clips already sent, carried from round to round
    with quiet_collector() as collector, Publisher(collector.ingest) as publisher:
        pause_projections(collector)
        shared = KeptOpen(publisher)
        probe = attach(pipeline, run="bench-probe", publisher=shared)
        seed_modules = {b.label.split(":")[0]: b.module for b in probe.bindings}
        probe.close()
        for step in range(5):  # warm-up
            train_step(pipeline, optimizer, batches[step], step)
        step = 5
        for _ in range(rounds):
            modes = list(times)
            random.shuffle(modes)
            for mode in modes:
                tap = seed = None
                if mode == "ours":
                    tap = attach(pipeline, run="bench-overhead", frozen_once=False, publisher=shared)
                elif mode == "default":
                    # A run keeps one tap; here each round attaches its own (so that "off" steps run
                    # without hooks), and the new tap takes over what the earlier ones already sent.
                    tap = attach(pipeline, run="bench-overhead-default", publisher=shared)
                    tap._seen_frozen = sent_frozen
                elif mode == "seed":
                    seed = SeedStyleHooks(seed_modules, collector.ingest)
                elapsed = 0.0
                for _ in range(block):
                    elapsed += train_step(pipeline, optimizer, batches[step % len(batches)], step, tap)
                    step += 1
                times[mode].append(elapsed / block)
                if tap is not None:
                    tap.close()
                if seed is not None:
                    seed.close()
        sent = publisher.stats()
    med = {mode: statistics.median(v) for mode, v in times.items()}
    results = {
        "overhead_step_ms_off": round(1000 * med["off"], 2),
        "overhead_step_ms_ours": round(1000 * med["ours"], 2),
        "overhead_step_ms_default": round(1000 * med["default"], 2),
        "overhead_step_ms_seed": round(1000 * med["seed"], 2),
        "overhead_pct": round(paired_overhead(times, "ours"), 2),
        "overhead_pct_default": round(paired_overhead(times, "default"), 2),
        "seed_overhead_pct": round(paired_overhead(times, "seed"), 2),
        "overhead_steps_per_mode": len(times["off"]) * block,
        "overhead_modules_hooked": len(seed_modules),
    }
    print(json.dumps({**results, "publisher": {k: sent[k] for k in ("sent", "dropped")}}))
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=150)
    parser.add_argument("--block", type=int, default=1)
    args = parser.parse_args()
    record(main(args.rounds, args.block))
