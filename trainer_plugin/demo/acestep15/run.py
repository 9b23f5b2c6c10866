"""Train the ACE-Step 1.5 twin in a Lightning Fabric loop on CPU, shaped like 1.5's ``_train_with_fabric``.

Fabric sets up the decoder and optimizer, then the loop runs ``module.training_step(batch)``,
``fabric.backward`` outside it, gradient accumulation (``accumulate``, default 4) with an
end-of-epoch flush of the remainder, ``global_step`` counting optimizer steps, and a validation
loss under ``torch.no_grad()`` after every epoch. The monitor is added with the lines
docs/acestep15.md gives for 1.5's trainers (edits 1 to 3).
"""
from __future__ import annotations

import math
import time
import warnings
from contextlib import nullcontext
from datetime import datetime

import torch
from torch.utils.data import DataLoader

from ..audio_files import write_15_audio
from ..data import GENRES
from .data import PreprocessedSongs, collate
from .model import AceStepConditionGenerationModel
from .module import PreprocessedLoRAModule

try:
    from lightning.fabric import Fabric
except ImportError:  # pytorch_lightning ships Fabric as lightning_fabric
    from lightning_fabric import Fabric


LEARNING_RATE = 1e-3


def default_run_name() -> str:
    return datetime.now().strftime("demo15-%Y%m%d-%H%M%S")


def build(seed: int = 0, clips_per_genre: int = 5, validation_clips_per_genre: int = 1, audio_dir: str | None = None):
    """(training module, training set, validation set): the twin with LoRA, preprocessed in memory.
    ``audio_dir``: write the training clips' audio there, named by their ``metadata["audio_path"]``."""
    torch.manual_seed(seed)
    model = AceStepConditionGenerationModel()
    train_set = PreprocessedSongs(model.encoder, clips_per_genre, GENRES, audio_dir=audio_dir)
    if audio_dir:
        write_15_audio([sample["metadata"] for sample in train_set.samples])
    val_set = PreprocessedSongs(model.encoder, validation_clips_per_genre, GENRES, first_index=clips_per_genre)
    module = PreprocessedLoRAModule(model)
    module.model.decoder.gradient_checkpointing_enable()
    return module, train_set, val_set


def run_demo(endpoint: str = "tcp://127.0.0.1:5557", steps: int = 200, run: str | None = None,
             batch_size: int = 2, accumulate: int = 4, seed: int = 0, monitor: bool = True,
             monitor_options: dict | None = None, threads: int | None = 1, lr: float = 1e-3,
             audio_dir: str | None = None) -> dict:
    """Train for ``steps`` optimizer steps and return a summary; ``monitor`` attaches acestep-viz;
    ``audio_dir``: write the clips' audio there first (audio_files.py)."""
    if threads:
        torch.set_num_threads(threads)  # the twin is tiny: more threads only spin against the collector
    options = {"endpoint": endpoint, "run": run or default_run_name(), "enabled": monitor, **(monitor_options or {})}
    trainer = TwinTrainer(steps, batch_size, accumulate, seed, options, lr, audio_dir)
    return trainer.train()


class TwinTrainer:
    """The shape of 1.5's trainers: ``train`` (its ``finally`` closes the monitor) and ``_train_fabric``."""

    def __init__(self, steps: int, batch_size: int, accumulate: int, seed: int, monitor_options: dict,
                 lr: float = 1e-3, audio_dir: str | None = None):
        self.steps, self.batch_size, self.accumulate, self.seed, self.lr = steps, batch_size, accumulate, seed, lr
        self.audio_dir = audio_dir
        self.monitor_options = monitor_options  # the demo's endpoint and run; a real trainer uses ACESTEP_VIZ_*
        self.module = self.fabric = self.monitor = None
        self.summary: dict = {}

    def train(self) -> dict:
        try:
            self._train_fabric()
        finally:
            if getattr(self, "monitor", None):
                self.monitor.close()
        return self.summary

    def _train_fabric(self) -> None:
        self.module, train_set, val_set = build(self.seed, audio_dir=self.audio_dir)
        self.fabric = Fabric(accelerator="cpu", devices=1, precision="32-true")
        self.fabric.launch()
        train_loader = DataLoader(train_set, batch_size=self.batch_size, shuffle=True, collate_fn=collate,
                                  generator=torch.Generator().manual_seed(self.seed))
        val_loader = DataLoader(val_set, batch_size=self.batch_size, collate_fn=collate)
        optimizer = torch.optim.AdamW([p for p in self.module.model.parameters() if p.requires_grad], lr=self.lr)
        self.module.model.decoder, optimizer = self.fabric.setup(self.module.model.decoder, optimizer)
        train_loader = self.fabric.setup_dataloaders(train_loader)

        try:  # acestep-viz: live embedding maps; never stops training
            from acestep_viz.trainer_plugin.acestep15 import watch
            self.monitor = watch(self.module, fabric=self.fabric, **self.monitor_options)
        except ImportError:
            self.monitor = None

        # Training loop
        global_step, accumulation_step, validation_losses = 0, 0, []
        started = time.perf_counter()
        self.module.model.decoder.train()
        for _epoch in range(math.ceil(self.steps * self.accumulate / max(1, len(train_loader))) + 1):
            for _batch_idx, batch in enumerate(train_loader):
                with self.monitor.step(global_step, _batch_idx, batch) if self.monitor else nullcontext():
                    loss = self.module.training_step(batch)
                self.fabric.backward(loss / self.accumulate)
                accumulation_step += 1
                if accumulation_step >= self.accumulate:
                    global_step, accumulation_step = _optimizer_step(optimizer, global_step), 0
                if global_step >= self.steps:
                    break
            if accumulation_step > 0:  # the end-of-epoch flush of a partial accumulation
                global_step, accumulation_step = _optimizer_step(optimizer, global_step), 0
            validation_losses.append(_validation_loss(self.module, val_loader))
            if global_step >= self.steps:
                break
        losses = self.module.training_losses
        self.summary = {"run": self.monitor_options.get("run"), "steps": global_step,
                        "seconds": round(time.perf_counter() - started, 3),
                        "final_loss": losses[-1] if losses else None,
                        "validation_loss": validation_losses[-1] if validation_losses else None,
                        "monitor": self.monitor.stats() if self.monitor else None}


def _optimizer_step(optimizer, global_step: int) -> int:
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return global_step + 1


def _validation_loss(module, val_loader) -> float:
    module.model.decoder.eval()
    total, count = 0.0, 0
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for val_batch in val_loader:
            total += module.training_step(val_batch, record_loss=False).item()
            count += 1
    module.model.decoder.train()
    return total / max(count, 1)
