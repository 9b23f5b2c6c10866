"""The ACE-Step twin: a tiny model with the real trainer's module paths and call patterns.

Importing this package costs numpy and torch only; Lightning, transformers and peft load on first use.
"""
from __future__ import annotations

from .data import SyntheticSongs, collate


def build_pipeline(**kw):
    """A twin `Pipeline` (LightningModule); keyword arguments go to its constructor."""
    from .pipeline import Pipeline

    return Pipeline(**kw)


def __getattr__(name: str):
    if name == "run_demo":  # lazily, so importing the package does not import Lightning
        from .run import run_demo

        return run_demo
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["build_pipeline", "SyntheticSongs", "collate", "run_demo"]
