"""acestep-viz: live PaCMAP maps of the embeddings of an ACE-Step LoRA training run.

In a training script: ``from acestep_viz import EmbeddingMonitor`` (the Lightning callback) or
``attach`` (any PyTorch loop). These names load lazily, so importing the package pulls in no torch.
The parts: ``acestep_viz.trainer_plugin`` (hooks and publisher, in the training process),
``acestep_viz.collector`` (the sidecar), ``acestep_viz.dashboard`` (the web UI), and here the wire
format and settings both sides share (``wire``, ``settings``, ``security``), the command line
(``cli``, ``launcher``) and the ACETrainer integration (``acetrainer``).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"
__all__ = ["EmbeddingMonitor", "attach", "Tap", "__version__"]

# Installed, setup.cfg's package_dir puts collector/, dashboard/, trainer_plugin/ and assets/ inside this
# package. In a source checkout they sit beside this folder: look there too, so a checkout on PYTHONPATH works.
_checkout = Path(__file__).resolve().parent.parent
if (_checkout / "setup.cfg").is_file() and (_checkout / "trainer_plugin" / "__init__.py").is_file():
    __path__.append(str(_checkout))  # noqa: F821 (a package's __path__)

if TYPE_CHECKING:
    from acestep_viz.trainer_plugin import EmbeddingMonitor, Tap, attach


def __getattr__(name: str) -> Any:
    if name in ("EmbeddingMonitor", "attach", "Tap"):
        from acestep_viz import trainer_plugin

        return getattr(trainer_plugin, name)
    raise AttributeError(f"module 'acestep_viz' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
