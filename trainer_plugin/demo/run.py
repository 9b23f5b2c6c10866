"""Train the twin under a real pytorch_lightning.Trainer on CPU, with the embedding monitor attached."""
from __future__ import annotations

import re
import time
import warnings
from datetime import datetime
from typing import Iterable

import pytorch_lightning as pl
import torch

from .pipeline import Pipeline


def default_run_name() -> str:
    return datetime.now().strftime("demo-%Y%m%d-%H%M%S")


class StepTimer(pl.Callback):
    """Wall time of each training batch: plot_step, preprocess, forward, backward, optimiser step."""

    def __init__(self):
        self.durations: list[float] = []
        self._start = 0.0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.durations.append(time.perf_counter() - self._start)


def monitor_stats(monitor) -> dict | None:
    stats = getattr(monitor, "stats", None)
    try:
        return dict(stats() if callable(stats) else stats) if stats is not None else None
    except Exception as exc:  # the summary must not fail because of the monitor's reporting
        return {"error": repr(exc)}


def run_demo(endpoint: str = "tcp://127.0.0.1:5557", steps: int = 200, run: str | None = None,
             every_plot_step: int = 25, batch_size: int = 2, callbacks_extra: Iterable = (),
             monitor_kwargs: dict | None = None, monitor: bool = True, seed: int = 0,
             threads: int | None = 1, lr: float = 1e-3, audio_dir: str | None = None) -> dict:
    """Train the twin for `steps` optimiser steps and return a summary.

    With `audio_dir`, its clips are first written there as `<key>.wav` (audio_files.py).

    With `monitor=True` an `EmbeddingMonitor(endpoint=endpoint, run=run, **monitor_kwargs)` rides
    along as a Lightning callback and publishes to `endpoint`. `lr`: AdamW's peak learning rate.
    """
    run = run or default_run_name()
    if threads:
        # The twin is tiny: one intra-op thread is as fast, and OpenMP threads spin-waiting
        # against the collector's PaCMAP on a small machine made steps 10x slower.
        torch.set_num_threads(threads)
    pl.seed_everything(seed, verbose=False)
    # The run names the adapter, as exp_name does in ACE-Step; peft adapter names cannot hold dots.
    pipeline = Pipeline(every_plot_step=every_plot_step, batch_size=batch_size, max_steps=steps,
                        adapter_name=re.sub(r"\W", "_", run), seed=seed, learning_rate=lr)
    if audio_dir:
        from .audio_files import write_v1_audio

        write_v1_audio(audio_dir, pipeline.hparams.n_clips, pipeline.hparams.sample_rate, seed)
    timer = StepTimer()
    callbacks = [timer, *callbacks_extra]
    embedding_monitor = None
    if monitor:
        from acestep_viz.trainer_plugin.lightning import EmbeddingMonitor

        embedding_monitor = EmbeddingMonitor(endpoint=endpoint, run=run, **(monitor_kwargs or {}))
        callbacks.append(embedding_monitor)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         accumulate_grad_batches=1, num_sanity_val_steps=0, callbacks=callbacks)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        # The frozen DCAE and text encoder are in eval mode on purpose, as in ACE-Step.
        warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")
        trainer.fit(pipeline)
    seconds = time.perf_counter() - started
    durations = sorted(timer.durations)
    loss = trainer.callback_metrics.get("train/loss")
    return {
        "run": run,
        "learning_rate": pipeline.hparams.learning_rate,
        "steps": trainer.global_step,
        "seconds": round(seconds, 3),
        "ms_per_step_median": round(1000 * durations[len(durations) // 2], 2) if durations else None,
        "final_loss": float(loss) if isinstance(loss, torch.Tensor) else None,
        "plot_steps": list(pipeline.plot_steps),
        "monitor": monitor_stats(embedding_monitor) if embedding_monitor is not None else None,
    }
