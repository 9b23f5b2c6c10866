"""The tap's overhead against forward hooks that do nothing, on a fast and a realistic twin.

Modes, interleaved round by round in random order on the same batch, as in ``overhead.py`` (whose
harness and estimators this reuses): "off" (no hooks); "tap" (the tap, capturing every space every
step, ``frozen_once=False``, the worst case, with its own publisher woken every ``batch_steps`` steps
of the mode, ``overhead.Batched``); "noop_hooks" (forward hooks that return at once on the modules the
tap hooks: what torch's hook mechanism costs by itself, the checkpoint recompute's hook calls included).

Twins: "fast" is the demo's default size (fp32, about 35-40 ms a step here); "realistic" scales the
transformer up (12 blocks of width 384, 6 heads), uses 5-10 s clips (two to three times the demo's
latent length) and runs the training step under ``torch.autocast("cpu", dtype=torch.bfloat16)``, as the
real trainers run bf16-mixed on a GPU (a few hundred ms a step here, about as long as in fp32; the
fast twin stays fp32, as the demo runs: autocast's casts would triple its step).
The text and lyric encoders and the DCAE keep the demo's size.

Figures per twin and mode: the overhead against "off" in percent, ``paired_pct`` (paired differences
per place in the sender-batch cycle, medians) with its bootstrap 95 % interval, the same as
milliseconds a step, and the median of per-group ratios with its interval; plus how noisy the
machine was (spread and drift of the off steps, load average). Each twin runs for ``--seconds`` of
wall clock after its warm-up. JSON on stdout; keys are flat, so ``run_all.py`` can ``record`` them.

    python tests/benchmarks/sender_choice.py [--twins fast,realistic] [--seconds 420]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from contextlib import ExitStack

import numpy as np
import torch
from acestep_viz.trainer_plugin import attach
from acestep_viz.trainer_plugin.demo import SyntheticSongs, collate
from acestep_viz.trainer_plugin.demo.data import LYRIC_VOCAB_SIZE
from acestep_viz.trainer_plugin.demo.pipeline import TEXT_DIM
from acestep_viz.trainer_plugin.demo.twin import TwinTransformer, add_lora
from acestep_viz.trainer_plugin.publisher import BATCH_S, MemoryPublisher, Publisher
from common import pause_projections, quiet_collector, record
from overhead import (
    Batched,
    bootstrap_ci,
    make_batches,
    median_pct,
    paired_ci,
    paired_pct,
    paired_ratios,
    timed_twin,
    train_step,
)

from acestep_viz.wire import FROZEN_SPACES

MODES = ("off", "tap", "noop_hooks")
TWINS = ("fast", "realistic")
REALISTIC = {"inner_dim": 384, "heads": 6, "num_layers": 12}
REALISTIC_SECONDS = (5.0, 10.0)
NEVER = 3600.0  # a batch goes when the harness wakes the publisher, not when batch_s has passed


def realistic_twin() -> tuple:
    """The fast twin with a larger LoRA'd transformer, longer clips and a bf16-autocast training step."""
    pipeline, _ = timed_twin()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        transformer = TwinTransformer(text_dim=TEXT_DIM, lyric_vocab_size=LYRIC_VOCAB_SIZE, **REALISTIC)
    pipeline.transformers = add_lora(transformer, adapter_name=pipeline.adapter_name)
    pipeline.transformers.enable_gradient_checkpointing()
    forward = pipeline.training_step

    def training_step_bf16(batch, batch_idx):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return forward(batch, batch_idx)

    pipeline.training_step = training_step_bf16
    optimizer = torch.optim.AdamW([p for p in pipeline.parameters() if p.requires_grad], lr=1e-4)
    data = SyntheticSongs(min_seconds=REALISTIC_SECONDS[0], max_seconds=REALISTIC_SECONDS[1])
    batches = [collate([data[(2 * i + j) % len(data)] for j in range(2)]) for i in range(len(data) // 2)]
    return pipeline, optimizer, batches


def twin(name: str) -> tuple:
    if name == "realistic":
        return realistic_twin()
    pipeline, optimizer = timed_twin()
    return pipeline, optimizer, make_batches(64)


def hooked_modules(pipeline) -> list:
    """The modules the tap hooks on ``pipeline``."""
    with attach(pipeline, run="bench-probe", publisher=MemoryPublisher()) as probe:
        return [binding.module for binding in probe.bindings if binding.module is not None]


def noop_hooks(modules: list) -> list:
    """Forward hooks that return at once, registered as the tap registers its own; returns their handles."""
    return [module.register_forward_hook(lambda *args: None, with_kwargs=True) for module in modules]


def mode_estimates(times: dict, mode: str, group: int) -> dict:
    """Overhead of ``mode`` against "off" in percent: paired (with interval) and median-of-ratios (with interval)."""
    ratios = paired_ratios(times, mode, group)
    low, high = paired_ci(times, mode, group)
    ratio_low, ratio_high = bootstrap_ci(ratios)
    return {"pct": round(paired_pct(times, mode, group), 2), "ci95_low": low, "ci95_high": high,
            "ratio_pct": round(median_pct(ratios), 2), "ratio_ci95_low": ratio_low, "ratio_ci95_high": ratio_high}


def noise(off_times: list[float]) -> dict:
    """How much the off steps varied: interquartile range and 10-90 % range over the median, in percent,
    and the spread of the medians of successive tenths of the run (slow drift of the machine's speed)."""
    steps = np.asarray(off_times)
    q10, q25, q50, q75, q90 = np.percentile(steps, [10, 25, 50, 75, 90])
    tenths = [np.median(part) for part in np.array_split(steps, 10) if len(part)]
    return {"iqr_pct": round(100 * (q75 - q25) / q50, 1), "p10_p90_pct": round(100 * (q90 - q10) / q50, 1),
            "drift_pct": round(100 * (max(tenths) - min(tenths)) / q50, 1)}


def summarise(twin_name: str, times: dict, group: int) -> dict:
    """Flat result keys for one twin, ``sender_<twin>_...``."""
    prefix = f"sender_{twin_name}_"
    results = {prefix + "step_ms_off": round(1000 * statistics.median(times["off"]), 2),
               prefix + "rounds": len(times["off"]), prefix + "steps_per_sender_batch": group}
    for mode in MODES[1:]:
        results[prefix + f"step_ms_{mode}"] = round(1000 * statistics.median(times[mode]), 2)
        estimates = mode_estimates(times, mode, group)
        results.update({prefix + f"{mode}_{key}": value for key, value in estimates.items()})
        # the same in milliseconds a step: what carries over to a step of another length (a GPU's)
        results[prefix + f"{mode}_extra_ms"] = round(estimates["pct"] * results[prefix + "step_ms_off"] / 100, 3)
    results.update({prefix + f"noise_{key}": value for key, value in noise(times["off"]).items()})
    return results


def publishers(stack: ExitStack, endpoint: str) -> dict:
    return {"tap": stack.enter_context(Publisher(endpoint, frozen_spaces=FROZEN_SPACES, batch_s=NEVER))}


def counts(name: str, sent: dict, errors: dict) -> dict:
    """Frames each mode's publisher sent and dropped, and the errors of taps and publishers (listed on stderr)."""
    results = {}
    for mode, stats in sent.items():
        results[f"sender_{name}_{mode}_frames_sent"] = stats["sent"]
        results[f"sender_{name}_{mode}_frames_dropped"] = stats["dropped"]
        errors.update({f"{mode}:{kind}": count for kind, count in stats["errors"].items()})
    results[f"sender_{name}_errors"] = sum(errors.values())
    if errors:
        print(f"{name} twin: errors {errors}", file=sys.stderr)
    return results


def run_twin(name: str, seconds: float) -> dict:
    pipeline, optimizer, batches = twin(name)
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    load_before = os.getloadavg()[0]
    with quiet_collector() as collector, ExitStack() as stack:
        pause_projections(collector)
        senders = publishers(stack, collector.ingest)
        hooked = hooked_modules(pipeline)
        warm_up = [train_step(pipeline, optimizer, batches[step % len(batches)], step) for step in range(10)]
        group = max(1, round(BATCH_S / statistics.median(warm_up[4:])))
        held = {mode: Batched(publisher, group) for mode, publisher in senders.items()}
        errors: dict[str, int] = {}
        probes: dict = {}
        step, deadline = 10, time.monotonic() + seconds
        while time.monotonic() < deadline or len(times["off"]) % group:
            batch = batches[step % len(batches)]
            for mode in random.sample(MODES, len(MODES)):
                tap, handles = None, noop_hooks(hooked) if mode == "noop_hooks" else []
                if mode == "tap":
                    tap = attach(pipeline, run=f"bench-sender-{name}-{mode}", frozen_once=False, publisher=held[mode])
                    tap.adapter = probes.setdefault(mode, tap.adapter)  # a run keeps one, as overhead.py
                times[mode].append(train_step(pipeline, optimizer, batch, step, tap, held.get(mode)))
                for handle in handles:
                    handle.remove()
                if tap is not None:
                    for kind, count in tap._errors.as_dict().items():  # the publisher's are counted apart
                        errors[f"{mode}:{kind}"] = errors.get(f"{mode}:{kind}", 0) + count
                    tap.close()
            step += 1
        for holder in held.values():
            holder.publisher.wake()
        time.sleep(1.0)
    sent = {mode: publisher.stats() for mode, publisher in senders.items()}  # final counts: closed now
    results = summarise(name, times, group)
    results.update(counts(name, sent, errors))
    results[f"sender_{name}_load_avg_start"] = round(load_before, 2)
    results[f"sender_{name}_load_avg_end"] = round(os.getloadavg()[0], 2)
    return results


def main(twins: tuple[str, ...] = TWINS, seconds: float = 420.0) -> dict:
    torch.manual_seed(0)
    random.seed(0)
    results: dict = {}
    for name in twins:
        results.update(run_twin(name, seconds))
        print(json.dumps({key: value for key, value in results.items() if key.startswith(f"sender_{name}_")}),
              flush=True)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--twins", default=",".join(TWINS), help="comma-separated: fast, realistic")
    parser.add_argument("--seconds", type=float, default=420.0, help="timed rounds per twin, after warm-up")
    args = parser.parse_args()
    chosen = tuple(name.strip() for name in args.twins.split(",") if name.strip())
    unknown = set(chosen) - set(TWINS)
    if unknown:
        parser.error(f"unknown twin(s) {', '.join(sorted(unknown))}; choose from {', '.join(TWINS)}")
    record(main(chosen, args.seconds))
