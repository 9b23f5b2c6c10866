"""The ACE-Step 1.5 twin: a tiny generation model with 1.5's module paths, a preprocessed dataset
made in memory, and a Lightning Fabric training loop (``run_demo``). Lightning and peft load on first use."""
from __future__ import annotations


def __getattr__(name: str):
    if name == "run_demo":  # lazily, so importing the package does not import Lightning
        from .run import run_demo

        return run_demo
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["run_demo"]
