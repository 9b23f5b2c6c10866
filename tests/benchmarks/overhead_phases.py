"""Where the trainer overhead lands: each phase of a twin step, tap off vs on, and vs hooks that do nothing.

Modes, interleaved round by round on the same batch as in ``overhead.py``: "off" (no hooks), "ours" (the tap,
all three spaces every step, its own publisher sent every ``--batch-steps`` steps of the mode), "unsent" (the
tap as in "ours", whose step records are accepted and dropped unbuilt: the training thread's own share, without
the sender thread's frame building) and "noop" (forward hooks that return at once, on the modules the tap hooks:
what torch's hook mechanism costs by itself). All keep their hooks in place through the backward, so their
backward figures include the checkpoint recompute's hook calls. Phases: the sender batch at the step's start,
the forward (hooks included), ``flush``, the backward (gradient-checkpoint recompute included) and the optimizer
step. Figures: per phase, the median over groups of ``--batch-steps`` rounds of the mean difference from the off
steps, in microseconds. Not part of ``make bench``: it explains the overhead figure rather than adding one.

    python tests/benchmarks/overhead_phases.py [--rounds 1200]
"""
from __future__ import annotations

import argparse
import random
import time

import numpy as np
from acestep_viz.trainer_plugin import attach
from acestep_viz.trainer_plugin.publisher import MemoryPublisher, Publisher
from common import pause_projections, quiet_collector
from overhead import Batched, make_batches, timed_twin

from acestep_viz.wire import FROZEN_SPACES

PHASES = ("batch", "forward", "flush", "backward", "optimizer", "step")


def timed_step(pipeline, optimizer, batch, step, tap=None, held: Batched | None = None) -> tuple[float, ...]:
    clock = time.perf_counter
    started = clock()
    if held is not None:
        held.step_starts()
    batch_done = clock()
    if tap is not None:
        tap.arm(step, 0, batch)
    loss = pipeline.training_step(batch, step)
    forward_done = clock()
    if tap is not None:
        tap.flush()
    flush_done = clock()
    loss.backward()
    backward_done = clock()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    done = clock()
    return (batch_done - started, forward_done - batch_done, flush_done - forward_done,
            backward_done - flush_done, done - backward_done, done - started)


class Unsent:
    """A publisher that accepts every item and drops it: no frames are built, nothing is sent."""

    def publish(self, item) -> bool:
        return True

    def step_starts(self) -> None:
        pass

    def stats(self) -> dict:
        return {}

    def close(self) -> None:
        pass


def main(rounds: int, batch_steps: int) -> None:
    pipeline, optimizer = timed_twin()
    batches = make_batches(64)
    times = {"off": [], "ours": [], "unsent": [], "noop": []}
    with quiet_collector() as collector, \
            Publisher(collector.ingest, frozen_spaces=FROZEN_SPACES, batch_s=3600.0) as publisher:
        pause_projections(collector)
        probe = attach(pipeline, run="phases-probe", publisher=MemoryPublisher())
        hooked = [binding.module for binding in probe.bindings]
        probe.close()
        held = Batched(publisher, batch_steps)
        sinks = {"ours": held, "unsent": Unsent()}
        for step in range(15):
            timed_step(pipeline, optimizer, batches[step], step)
        probes: dict = {}
        for step in range(15, 15 + rounds):
            modes = list(times)
            random.shuffle(modes)
            for mode in modes:
                batch = batches[step % len(batches)]
                if mode in sinks:
                    with attach(pipeline, run="phases", frozen_once=False, publisher=sinks[mode]) as tap:
                        tap.adapter = probes.setdefault(mode, tap.adapter)  # a run keeps one, as overhead.py
                        times[mode].append(timed_step(pipeline, optimizer, batch, step, tap, sinks[mode]))
                elif mode == "noop":
                    handles = [m.register_forward_hook(lambda *args: None, with_kwargs=True) for m in hooked]
                    times[mode].append(timed_step(pipeline, optimizer, batch, step))
                    for handle in handles:
                        handle.remove()
                else:
                    times[mode].append(timed_step(pipeline, optimizer, batch, step))
    off = np.array(times["off"])
    n = len(off) // batch_steps * batch_steps
    print(f"off step: {1000 * np.median(off[:, -1]):.2f} ms; {n} rounds in groups of {batch_steps}")
    for mode in ("ours", "unsent", "noop"):
        extra = (np.array(times[mode])[:n] - off[:n]) * 1e6
        groups = extra.reshape(-1, batch_steps, len(PHASES)).mean(axis=1)
        share = 100 * np.median(groups[:, -1]) / (1e6 * np.median(off[:, -1]))
        print(mode + ": " + ", ".join(f"{phase} {np.median(groups[:, i]):+.0f} us"
                                      for i, phase in enumerate(PHASES)) + f" ({share:+.2f} % of the off step)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=1200, help="interleaved rounds (about 4 minutes here)")
    parser.add_argument("--batch-steps", type=int, default=15, help="steps per sender batch (15: 0.5 s of steps here)")
    args = parser.parse_args()
    main(args.rounds, args.batch_steps)
