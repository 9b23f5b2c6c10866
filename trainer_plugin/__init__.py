"""Trainer-side capture for acestep-viz: hooks, pooling and a non-blocking publisher.

``attach(model)`` works with any PyTorch loop; ``EmbeddingMonitor`` is the Lightning callback.
Names load lazily so that importing this package pulls in neither torch nor pytorch_lightning.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["attach", "Tap", "EmbeddingMonitor"]

if TYPE_CHECKING:
    from acestep_viz.trainer_plugin.lightning import EmbeddingMonitor
    from acestep_viz.trainer_plugin.tap import Tap, attach


def __getattr__(name: str) -> Any:
    if name in ("attach", "Tap"):
        from acestep_viz.trainer_plugin import tap

        return getattr(tap, name)
    if name == "EmbeddingMonitor":
        from acestep_viz.trainer_plugin.lightning import EmbeddingMonitor

        return EmbeddingMonitor
    raise AttributeError(f"module 'trainer_plugin' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
