"""The sender-choice benchmark's summary: a known overhead comes out as such, with an interval around it."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from acestep_viz.trainer_plugin import attach
from acestep_viz.trainer_plugin.demo import SyntheticSongs, build_pipeline, collate
from acestep_viz.trainer_plugin.publisher import MemoryPublisher

sys.path.insert(0, str(Path(__file__).resolve().parent / "benchmarks"))

from sender_choice import MODES, hooked_modules, noise, noop_hooks, summarise  # noqa: E402


def synthetic_times(rounds: int = 400, group: int = 4) -> dict:
    """Off steps of 100 ms drifting by 30 % with 10 % jitter; each mode pays a fixed share on top, the
    the no-op hooks 2 %, the tap 5 % only on the first step of each sender batch (20 % there)."""
    rng = np.random.default_rng(1)
    drift = 1 + 0.3 * np.sin(np.arange(rounds) / 25)
    off = 0.1 * drift * rng.uniform(0.95, 1.05, rounds)
    batch_step = (np.arange(rounds) % group == 0)
    jitter = {mode: rng.normal(0, 0.002, rounds) for mode in MODES}
    extra = {"off": 0, "noop_hooks": 0.02 * off, "tap": 0.2 * off * batch_step}
    return {mode: list(off + extra[mode] + jitter[mode] * (mode != "off")) for mode in MODES}


def test_summary_recovers_known_overheads_with_intervals_around_them():
    results = summarise("fast", synthetic_times(), group=4)
    for mode, expected in (("noop_hooks", 2.0), ("tap", 5.0)):
        low, high = results[f"sender_fast_{mode}_ci95_low"], results[f"sender_fast_{mode}_ci95_high"]
        assert abs(results[f"sender_fast_{mode}_pct"] - expected) < 1.0, mode
        assert low <= expected <= high, (mode, low, high)
        assert high - low < 3.0, mode
    assert results["sender_fast_rounds"] == 400
    assert 95 < results["sender_fast_step_ms_off"] < 115


def test_noise_reports_spread_and_drift_of_the_off_steps():
    steady = noise([0.1] * 100)
    assert steady == {"iqr_pct": 0.0, "p10_p90_pct": 0.0, "drift_pct": 0.0}
    slowing = noise(list(np.linspace(0.1, 0.2, 100)))
    assert slowing["drift_pct"] > 50


def test_noop_hooks_sit_on_the_modules_the_tap_hooks_and_leave_training_unchanged():
    torch.manual_seed(0)
    pipeline = build_pipeline(every_plot_step=10**9)
    pipeline.log = lambda *a, **k: None
    batch = collate([SyntheticSongs()[i] for i in range(2)])
    publisher = MemoryPublisher()
    with attach(pipeline, run="probe", frozen_once=False, publisher=publisher) as tap:
        expected = {binding.module for binding in tap.bindings if binding.module is not None}
    hooked = hooked_modules(pipeline)
    assert set(hooked) == expected and not any(module._forward_hooks for module in pipeline.modules())
    torch.manual_seed(1)
    plain = pipeline.training_step(batch, 0).item()
    handles = noop_hooks(hooked)
    assert all(len(module._forward_hooks) == 1 for module in hooked)
    torch.manual_seed(1)
    assert pipeline.training_step(batch, 0).item() == plain
    for handle in handles:
        handle.remove()
    assert not any(module._forward_hooks for module in pipeline.modules())
