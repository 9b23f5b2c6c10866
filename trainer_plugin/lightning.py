"""``EmbeddingMonitor``: the Lightning callback adapter around ``attach``.

``__init__`` only stores configuration; ``setup`` resolves settings (explicit arguments over
``ACESTEP_VIZ_*`` variables over defaults), validates them with messages that say what to fix,
and attaches the hooks. A misconfiguration logs one warning and training goes on without the
monitor, unless ``strict`` (trainer_plugin/guard.py). Capture is armed per training batch, disarmed before backward
(gradient-checkpoint recompute), flushed at batch end, and closed at teardown or on exception.
Frames are keyed by (global_step, batch_idx): global_step repeats under gradient accumulation.
"""
from __future__ import annotations

import logging
from typing import Any, Iterable, Mapping

import pytorch_lightning as pl
import torch
from acestep_viz.trainer_plugin.guard import start_or_warn, strict_from_env
from acestep_viz.trainer_plugin.settings import TRAINER_SETTINGS
from acestep_viz.trainer_plugin.tap import Tap, attach, check_run_name, default_run_name

from acestep_viz.settings import resolve

log = logging.getLogger("acestep_viz")

ATTACH_OPTIONS = ("frozen_once", "warn_after_steps", "publisher", "publisher_options")
SETTING_OPTIONS = ("enabled", "lora_layers", "autostart", "strict", "adapter_every")


class EmbeddingMonitor(pl.Callback):
    """Stream pooled latent / LoRA / prompt embeddings of each training step to the collector."""

    def __init__(self, endpoint: str | None = None, run: str | None = None, preset: str | None = "acestep",
                 spaces: Mapping[str, Any] | None = None, every_n_steps: int | None = None,
                 lora_output: str | None = None, all_ranks: bool | None = None,
                 eval_methods: Iterable[str] = ("plot_step",), **options: Any):
        self.explicit = {"endpoint": endpoint, "run": run, "every_n_steps": every_n_steps,
                         "lora_output": lora_output, "all_ranks": all_ranks,
                         **{name: options.pop(name, None) for name in SETTING_OPTIONS}}
        self.preset = preset
        self.spaces = spaces
        self.eval_methods = tuple(eval_methods)
        self.options = options
        self.tap: Tap | None = None

    # ------------------------------------------------------------------ lifecycle

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit" or (self.tap is not None and not self.tap.closed):
            return
        self.tap = start_or_warn(lambda: self._attach(trainer, pl_module), "EmbeddingMonitor",
                                 strict_from_env(self.explicit["strict"]))

    def _attach(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Tap | None:
        unknown = sorted(set(self.options) - set(ATTACH_OPTIONS))
        if unknown:
            raise TypeError(f"EmbeddingMonitor got unknown option(s) {', '.join(unknown)}; known options: "
                            f"{', '.join(ATTACH_OPTIONS + SETTING_OPTIONS)}")
        config = resolve(TRAINER_SETTINGS, flags=self.explicit)
        if not config["enabled"]:
            log.info("acestep_viz: EmbeddingMonitor disabled (ACESTEP_VIZ_ENABLED=false)")
            return None
        try:
            return attach(
                pl_module, preset=self.preset, spaces=self.spaces, endpoint=config["endpoint"],
                run=config["run"] or _default_run(trainer), every_n_steps=config["every_n_steps"],
                lora_output=config["lora_output"], lora_layers=config["lora_layers"] or None,
                all_ranks=config["all_ranks"], rank=trainer.global_rank, eval_methods=self.eval_methods,
                autostart=config["autostart"], strict=True, adapter_every=config["adapter_every"],
                **self.options)
        except ValueError as exc:
            raise ValueError(f"EmbeddingMonitor could not attach to {type(pl_module).__name__}: {exc}") from None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        if self.tap is not None:
            self.tap.arm(trainer.global_step, batch_idx, batch)

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        if self.tap is not None:
            self.tap.disarm()  # non-reentrant checkpointing re-runs block forwards during backward

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.tap is not None:
            self.tap.flush(loss=_loss_of(outputs))  # timesteps: read from the transformer's timestep= argument

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.close()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self.close()

    # ------------------------------------------------------------------ helpers

    def close(self) -> None:
        """Remove the hooks and close the publisher; the last stats stay readable."""
        if self.tap is not None:
            self.tap.close()

    def stats(self) -> dict:
        return self.tap.stats() if self.tap is not None else {"active": False}


def _loss_of(outputs: Any) -> Any:
    if isinstance(outputs, torch.Tensor):
        return outputs
    if isinstance(outputs, Mapping):
        return outputs.get("loss")
    return None


def _default_run(trainer: pl.Trainer) -> str:
    """The logger's version if it is a name (ACE-Step: '<date>_<exp_name>'), else the start time; same on every rank."""
    version = getattr(trainer.logger, "version", None) if trainer.logger is not None else None
    run = version.replace("/", "_")[:200] if isinstance(version, str) and version else default_run_name()
    return check_run_name(trainer.strategy.broadcast(run, src=0))
