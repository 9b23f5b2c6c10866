"""Trainer overhead: twin training-step time with the tap off, ours on, and the seed-style hooks.

All capture the same modules (latent encoder per clip, text encoder, three LoRA layers). "ours"
captures every space every step (``frozen_once=False``, the worst case), its frames built and sent
by the publisher's sender thread; "default" runs the default settings, where the frozen spaces
(latent, prompt) are sent once per clip and a clip already sent costs no pooling, so after the
first epoch only the LoRA layers cost anything.

Each round runs one step of each mode, in random order, all on the same batch, so the slow
phases of a noisy machine (its speed drifts by tens of percent over seconds) cancel out. Part
of the tap's work is done once per sender batch, every ``batch_s`` (0.5 s) of training: the
sender thread wakes and builds the frames of the steps queued meanwhile. With the modes
interleaved, a mode gets a quarter of the wall clock, so a wall-clock batch would come four times
as often per step as in a real run. Instead each mode has its own publisher, whose ``batch_s``
never comes: steps are handed to it as in a run (the publisher queues each),
and its batch is sent when the harness wakes it, at the start of every ``--batch-steps``-th step of
that mode: by default as many steps as the off mode runs in ``batch_s`` (13 to 15 on this machine),
measured in the warm-up. The overhead is the median over groups of ``--batch-steps`` rounds of (the
mode's total step time / the off steps' total) - 1: each group holds exactly one sender batch of
its mode. ``overhead_pct_paired`` is the same overhead from paired differences of the steps of a
round, per place in the batch cycle (``paired_pct``): about half as wide an interval on this noisy
machine. The publishers stay connected for the whole run.
The seed-style path is what the original tab did: in the hook, `.tolist()` the output and send
JSON over a socket, synchronously on the training thread (pooled first, else it crashes on
variable shapes).

    python tests/benchmarks/overhead.py [--rounds 2400] [--batch-steps N]
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import time

import numpy as np
import torch
import zmq
from acestep_viz.trainer_plugin import attach
from acestep_viz.trainer_plugin.demo import SyntheticSongs, build_pipeline, collate
from acestep_viz.trainer_plugin.publisher import BATCH_S, MemoryPublisher, Publisher
from common import pause_projections, quiet_collector, record

from acestep_viz.wire import FROZEN_SPACES


class Batched:
    """A mode's publisher, whose batches are sent at the start of every ``every``-th step of that mode
    (``wake``) rather than every ``batch_s`` of wall-clock time, so that each sender batch overlaps a
    step of its mode. Steps are handed over at once, as in a run, and encoded when the batch is sent."""

    def __init__(self, publisher: Publisher, every: int):
        self.publisher, self.every = publisher, every
        self.steps = 0

    def publish(self, item) -> bool:
        return self.publisher.publish(item)

    def step_starts(self) -> None:
        self.steps += 1
        if self.steps % self.every == 0:
            self.publisher.wake()

    def stats(self) -> dict:
        return self.publisher.stats()

    def close(self) -> None:
        pass  # a tap closing between steps leaves the publisher open


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


def train_step(pipeline, optimizer, batch, step, tap=None, held: Batched | None = None) -> float:
    started = time.perf_counter()
    if held is not None:
        held.step_starts()  # maybe a sender batch of this mode's earlier steps: it overlaps this step
    if tap is not None:
        with tap.step(step, 0, batch):
            loss = pipeline.training_step(batch, step)
    else:
        loss = pipeline.training_step(batch, step)
    loss.backward()  # outside the armed block: checkpoint recompute is not captured
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - started


def paired_ratios(times: dict, mode: str, group: int) -> np.ndarray:
    """Per group of ``group`` rounds: the mode's total step time / the off steps' total (same batches)."""
    n = len(times["off"]) // group * group
    mode_total = np.array(times[mode][:n]).reshape(-1, group).sum(axis=1)
    return mode_total / np.array(times["off"][:n]).reshape(-1, group).sum(axis=1)


def paired_pct(times: dict, mode: str, group: int, groups: np.ndarray | None = None) -> float:
    """The mode's overhead from paired differences: for each place in the sender-batch cycle (``group``
    steps, the batch at the first), the median over groups of (the mode's step - the off step of the
    same round), summed over the cycle, over the off steps' cycle (medians likewise). The two steps of
    a round share the machine's phase, and a slow outlier step spoils one difference, not a group's
    sum, so this is tighter than ``paired_ratios``' median; it misses a cost that is rare and irregular."""
    n = len(times["off"]) // group * group
    off = np.array(times["off"][:n]).reshape(-1, group)
    extra = np.array(times[mode][:n]).reshape(-1, group) - off
    if groups is not None:
        off, extra = off[groups], extra[groups]
    return 100 * float(np.median(extra, axis=0).sum() / np.median(off, axis=0).sum())


def paired_ci(times: dict, mode: str, group: int, resamples: int = 1000) -> tuple[float, float]:
    """95 % interval of ``paired_pct``, resampling groups."""
    rng = np.random.default_rng(0)
    count = len(times["off"]) // group
    estimates = [paired_pct(times, mode, group, rng.integers(0, count, count)) for _ in range(resamples)]
    low, high = np.percentile(estimates, [2.5, 97.5])
    return round(float(low), 2), round(float(high), 2)


def median_pct(ratios: np.ndarray) -> float:
    return 100 * (float(np.median(ratios)) - 1)


def bootstrap_ci(ratios: np.ndarray, resamples: int = 2000) -> tuple[float, float]:
    """95 % interval of the median overhead, resampling groups."""
    rng = np.random.default_rng(0)
    medians = np.median(rng.choice(ratios, size=(resamples, len(ratios))), axis=1)
    low, high = np.percentile(medians, [2.5, 97.5])
    return round(100 * (low - 1), 2), round(100 * (high - 1), 2)


def timed_twin() -> tuple:
    """The twin pipeline and its optimizer, set up for timing steps by hand."""
    torch.manual_seed(0)
    torch.set_num_threads(1)  # as the demo runs: OpenMP spin-waits against the collector otherwise
    pipeline = build_pipeline(every_plot_step=10**9)
    pipeline.plot_step = lambda *a, **k: None  # evaluation is not what we time
    pipeline.log = lambda *a, **k: None  # no Trainer attached in this hand-written loop
    optimizer = torch.optim.AdamW([p for p in pipeline.parameters() if p.requires_grad], lr=1e-4)
    return pipeline, optimizer


def main(rounds: int = 2400, batch_steps: int | None = None) -> dict:
    pipeline, optimizer = timed_twin()
    batches = make_batches(64)
    times = {"off": [], "ours": [], "default": [], "seed": []}
    sent_frozen: set = set()  # the default mode's clips already sent, carried from round to round
    probes: dict = {}  # each mode's adapter update-size probe, carried likewise (a run keeps one)
    never = 3600.0  # a batch goes when the harness wakes the publisher, not when batch_s has passed
    with quiet_collector() as collector, \
            Publisher(collector.ingest, frozen_spaces=FROZEN_SPACES, batch_s=never) as publisher, \
            Publisher(collector.ingest, frozen_spaces=FROZEN_SPACES, batch_s=never) as default_publisher:
        pause_projections(collector)
        probe = attach(pipeline, run="bench-probe", publisher=MemoryPublisher())
        seed_modules = {b.label.split(":")[0]: b.module for b in probe.bindings}
        probe.close()
        warm_up = [train_step(pipeline, optimizer, batches[step], step) for step in range(15)]
        if batch_steps is None:  # one sender batch per batch_s of this mode's own training, as in a real run
            batch_steps = max(1, round(BATCH_S / statistics.median(warm_up[5:])))
        held = {"ours": Batched(publisher, batch_steps), "default": Batched(default_publisher, batch_steps)}
        for step in range(15, 15 + rounds):
            modes = list(times)
            random.shuffle(modes)
            batch = batches[step % len(batches)]
            for mode in modes:
                tap = seed = None
                if mode == "ours":
                    tap = attach(pipeline, run=f"bench-overhead-{mode}", frozen_once=False, publisher=held[mode])
                elif mode == "default":
                    # A run keeps one tap; here each round attaches its own (so that "off" steps run
                    # without hooks), and the new tap takes over what the earlier ones already sent
                    # (and, in both modes, the adapter probe, which measures the frozen weights once).
                    tap = attach(pipeline, run="bench-overhead-default", publisher=held[mode])
                    tap._seen_frozen = sent_frozen
                elif mode == "seed":
                    seed = SeedStyleHooks(seed_modules, collector.ingest)
                if tap is not None:
                    tap.adapter = probes.setdefault(mode, tap.adapter)
                times[mode].append(train_step(pipeline, optimizer, batch, step, tap, held.get(mode)))
                if tap is not None:
                    tap.close()
                if seed is not None:
                    seed.close()
        for holder in held.values():
            holder.publisher.wake()
        time.sleep(1.0)
    sent = publisher.stats()
    med = {mode: statistics.median(v) for mode, v in times.items()}
    ratios = {mode: paired_ratios(times, mode, batch_steps) for mode in ("ours", "default", "seed")}
    low, high = bootstrap_ci(ratios["ours"])
    paired_low, paired_high = paired_ci(times, "ours", batch_steps)
    results = {
        "overhead_step_ms_off": round(1000 * med["off"], 2),
        "overhead_step_ms_ours": round(1000 * med["ours"], 2),
        "overhead_step_ms_default": round(1000 * med["default"], 2),
        "overhead_step_ms_seed": round(1000 * med["seed"], 2),
        "overhead_pct": round(median_pct(ratios["ours"]), 2),
        "overhead_pct_ci95_low": low,
        "overhead_pct_ci95_high": high,
        "overhead_pct_paired": round(paired_pct(times, "ours", batch_steps), 2),
        "overhead_pct_paired_ci95_low": paired_low,
        "overhead_pct_paired_ci95_high": paired_high,
        "overhead_pct_default": round(median_pct(ratios["default"]), 2),
        "overhead_pct_default_paired": round(paired_pct(times, "default", batch_steps), 2),
        "seed_overhead_pct": round(median_pct(ratios["seed"]), 2),
        "overhead_steps_per_mode": len(times["off"]),
        "overhead_steps_per_sender_batch": batch_steps,
        "overhead_modules_hooked": len(seed_modules),
    }
    print(json.dumps({**results, "publisher": {k: sent[k] for k in ("sent", "dropped")}}))
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2400, help="interleaved rounds (about 10 minutes here)")
    parser.add_argument("--batch-steps", type=int, default=None,
                        help="steps per sender batch (default: the off steps that fit in batch_s, measured)")
    args = parser.parse_args()
    record(main(args.rounds, args.batch_steps))
