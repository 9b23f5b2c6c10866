"""Each run's adapter update sizes over training steps: per layer, one value per measured step.

Bounded: a layer keeps its newest ``max_steps`` steps (with the trainer's default of one measurement
every 50 steps, 1000 steps cover 50,000 training steps). A step measured twice (a resumed run, a
replayed message) keeps its latest value. Pure data; ``CollectorState`` holds one per run under its lock.
"""
from __future__ import annotations

from acestep_viz.wire import AdapterSizes

MAX_STEPS = 1000


class AdapterSeries:
    def __init__(self, run: str, max_steps: int = MAX_STEPS):
        self.run = run
        self.max_steps = max_steps
        self._layers: dict[str, dict[int, float]] = {}  # layer -> {step: size}

    def add(self, message: AdapterSizes) -> None:
        for name, value in message.layers.items():
            points = self._layers.setdefault(name, {})
            points[int(message.step)] = float(value)
            if len(points) > self.max_steps:
                del points[min(points)]

    def as_reply(self) -> dict[str, dict[str, list]]:
        """{layer: {"step": [...], "value": [...]}}, steps ascending."""
        reply = {}
        for name, points in self._layers.items():
            steps = sorted(points)
            reply[name] = {"step": steps, "value": [points[s] for s in steps]}
        return reply

    def messages(self) -> list[AdapterSizes]:
        """The series as one message per step (for rewriting a compacted run log)."""
        by_step: dict[int, dict[str, float]] = {}
        for name, points in self._layers.items():
            for step, value in points.items():
                by_step.setdefault(step, {})[name] = value
        return [AdapterSizes(self.run, step, by_step[step]) for step in sorted(by_step)]

    def __len__(self) -> int:
        return len(self._layers)
