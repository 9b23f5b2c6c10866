"""Warnings about the training run, each with the figures behind it. Pure functions of collector data.

- The adapter does not move: after ``warmup_steps``, every LoRA layer's update size
  ||scale * B A|| / ||W|| is under ``adapter_min`` (a zero learning rate, frozen LoRA weights, an
  optimizer that was never given them), or it grew by less than ``adapter_growth`` of its size over the
  last ``window_steps`` on every layer (the adapter stalled).
- A space collapses: its latest effective rank is under ``rank_share`` of its first one (the outputs
  crowd into fewer directions: a learning rate too high, or a loss that rewards one answer).
- The LoRA map stopped changing: the LoRA outputs' drift from the first map grew by less than
  ``drift_min`` over the last ``window_steps``.

Inputs: the collector's ``adapter`` reply's layers (``{layer: {"step": [...], "value": [...]}}``) and the
dashboard's history store quality (``{space: {"step": [...], "effective_rank": [...], "lora_drift": [...]}}``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

SPACE_LABELS = {"latent": "latent", "lora": "LoRA", "prompt": "prompt"}


@dataclass(frozen=True)
class Thresholds:
    warmup_steps: int = 100
    window_steps: int = 200
    adapter_min: float = 1e-4
    adapter_growth: float = 0.01
    rank_share: float = 0.5
    drift_min: float = 0.01


@dataclass(frozen=True)
class Alert:
    kind: str  # "adapter_flat", "adapter_stalled", "collapse", "map_still"
    title: str
    evidence: str


Series = Mapping[str, Sequence[Any]]


def alerts(adapter: Mapping[str, Series] | None, quality: Mapping[str, Series] | None,
           limits: Thresholds = Thresholds()) -> list[Alert]:
    """Every alert that applies, adapter first."""
    found = [adapter_flat(adapter or {}, limits)]
    found += [collapse(space, series, limits) for space, series in (quality or {}).items()]
    found.append(map_still((quality or {}).get("lora") or {}, limits))
    return [alert for alert in found if alert is not None]


def points(series: Series, field: str = "value") -> list[tuple[int, float]]:
    """(step, value) pairs with a value, in step order."""
    pairs = [(int(s), float(v)) for s, v in zip(series.get("step") or [], series.get(field) or [])
             if v is not None and s is not None and int(s) >= 0]
    return sorted(pairs)


def value_at_or_before(pairs: list[tuple[int, float]], step: int) -> tuple[int, float] | None:
    earlier = [pair for pair in pairs if pair[0] <= step]
    return earlier[-1] if earlier else None


def adapter_flat(adapter: Mapping[str, Series], limits: Thresholds) -> Alert | None:
    layers = {name: points(series) for name, series in adapter.items()}
    layers = {name: pairs for name, pairs in layers.items() if pairs}
    if not layers:
        return None
    latest = max(pairs[-1][0] for pairs in layers.values())
    if latest < limits.warmup_steps:
        return None
    largest_name, (step, largest) = max(((name, pairs[-1]) for name, pairs in layers.items()),
                                        key=lambda item: item[1][1])
    if largest < limits.adapter_min:
        since = _under_since(layers, limits.adapter_min)
        return Alert("adapter_flat", "The adapter does not move",
                     f"largest update size {_g(largest)} ({largest_name}) at step {step}, under "
                     f"{_g(limits.adapter_min)} on every layer since step {since}")
    return adapter_stalled(layers, latest, limits)


def _under_since(layers: Mapping[str, list[tuple[int, float]]], limit: float) -> int:
    """The first measured step from which every layer stayed under ``limit``."""
    steps = sorted({step for pairs in layers.values() for step, _ in pairs})
    worst = {step: max(v for pairs in layers.values() for s, v in pairs if s == step) for step in steps}
    since = steps[-1]
    for step in reversed(steps):
        if worst[step] >= limit:
            break
        since = step
    return since


def adapter_stalled(layers: Mapping[str, list[tuple[int, float]]], latest: int, limits: Thresholds) -> Alert | None:
    """Every layer grew by less than ``adapter_growth`` of its size over the last window."""
    start = latest - limits.window_steps
    if start < limits.warmup_steps:
        return None
    growths = []
    for name, pairs in layers.items():
        then = value_at_or_before(pairs, start)
        now = pairs[-1][1]
        if then is None or now <= 0:
            return None  # not measured that far back, or nothing to compare with
        growths.append(((now - then[1]) / now, name))
    growth, name = max(growths)
    if growth >= limits.adapter_growth:
        return None
    return Alert("adapter_stalled", "The adapter stopped growing",
                 f"update sizes grew at most {growth:.2%} ({name}) between steps {start} and {latest}, "
                 f"under {limits.adapter_growth:.2%} on every layer")


def collapse(space: str, series: Series, limits: Thresholds) -> Alert | None:
    pairs = points(series, "effective_rank")
    if len(pairs) < 2:
        return None
    (first_step, first), (step, latest) = pairs[0], pairs[-1]
    if step < limits.warmup_steps or first <= 0 or latest >= limits.rank_share * first:
        return None
    label = SPACE_LABELS.get(space, space)
    return Alert("collapse", f"The {label} space is collapsing",
                 f"effective rank {latest:.3g} at step {step}, under {limits.rank_share:.0%} of its first value "
                 f"{first:.3g} (step {first_step})")


def map_still(series: Series, limits: Thresholds) -> Alert | None:
    pairs = points(series, "lora_drift")
    if not pairs:
        return None
    step, drift = pairs[-1]
    start = step - limits.window_steps
    then = value_at_or_before(pairs, start)
    if step < limits.warmup_steps or then is None:
        return None
    grown = drift - then[1]
    if grown >= limits.drift_min:
        return None
    return Alert("map_still", "The LoRA map stopped changing",
                 f"LoRA drift {drift:.3f} at step {step}, grew {grown:.3f} since step {then[0]} "
                 f"(under {_g(limits.drift_min)})")


def _g(value: float) -> str:
    """Two significant digits without an exponent: 0.00002, 0.0001, 0.013."""
    if value == 0 or abs(value) < 1e-9:
        return f"{value:.1g}"
    return np.format_float_positional(value, precision=2, fractional=False, trim="-")
