"""ACE-Step 1.5's trainers: one call after the model is set up, one ``with`` around the training step.

The three 1.5 trainers (``LoRATrainer._train_with_fabric``, ``train.py fixed``, Side-Step) are plain
Lightning Fabric loops: there is no callback list, so the monitor is attached by hand::

    monitor = watch(self.module, fabric=self.fabric)          # after fabric.setup and resume
    ...
    with monitor.step(global_step, _batch_idx, batch):         # in the loop
        loss = self.module.training_step(batch)
    ...
    monitor.close()                                            # when training ends (a ``finally``)

Only the forward inside the ``with`` block is captured: validation passes (``torch.no_grad()``, the
same ``training_step``), in-training sample generation and gradient-checkpoint recompute during
``fabric.backward`` (outside the block) capture nothing. Clip keys, captions and audio paths come from
the batch's ``metadata`` (``filename``, ``caption``, ``audio_path``); a clip's audio path travels once,
with its latent row, so the dashboard can play the clip. ``watch`` never stops training: a
misconfiguration logs one warning and returns a monitor that does nothing
(``ACESTEP_VIZ_STRICT=1`` makes it an error). See docs/acestep15.md.
"""
from __future__ import annotations

import logging
import weakref
from typing import Any

from acestep_viz.trainer_plugin.guard import start_or_warn
from acestep_viz.trainer_plugin.presets import find_dit
from acestep_viz.trainer_plugin.settings import TRAINER_SETTINGS
from acestep_viz.trainer_plugin.tap import Tap, attach, check_run_name, default_rank, default_run_name

from acestep_viz.settings import resolve

log = logging.getLogger("acestep_viz")

SETTING_OPTIONS = ("enabled", "endpoint", "run", "every_n_steps", "lora_layers", "lora_output", "all_ranks",
                   "curve_dir", "adapter_every")
ATTACH_OPTIONS = ("frozen_once", "warn_after_steps", "publisher", "publisher_options", "spaces", "eval_methods")
# the monitor watching each DiT: a second ``watch`` of the same model (the Gradio UI trains again in
# the same process) closes the first, whose hooks would otherwise stay on the model
_WATCHING: "weakref.WeakKeyDictionary[Any, Tap]" = weakref.WeakKeyDictionary()


class Unwatched:
    """What ``watch`` returns when the monitor is off or could not start: the same calls, doing nothing."""

    active = False
    closed = False

    def step(self, global_step: int = 0, batch_idx: int = 0, batch: Any = None, loss: Any = None) -> "Unwatched":
        return self

    def note(self, loss: Any = None, timesteps: Any = None, sample_losses: Any = None) -> None:
        return None

    def close(self) -> None:
        self.closed = True

    def stats(self) -> dict:
        return {"active": False}

    def __enter__(self) -> "Unwatched":
        return self

    def __exit__(self, *exc) -> bool:
        return False


def watch(module: Any, fabric: Any = None, **options: Any) -> Tap | Unwatched:
    """Attach the embedding monitor to an ACE-Step 1.5 training module and return it (a ``Tap``).

    ``module``: the training module (its ``.model`` is the AceStepConditionGenerationModel), the
    generation model or its decoder, before or after ``fabric.setup``. ``fabric``: the loop's Fabric,
    for the rank (rank 0 publishes unless ``all_ranks=True``) and a run name shared by all ranks.
    Options: the trainer settings (``endpoint``, ``run``, ``every_n_steps``, ``lora_layers``,
    ``lora_output``, ``all_ranks``, ``enabled``, ``curve_dir``, ``adapter_every``; each also read from its
    ``ACESTEP_VIZ_*`` variable) and ``attach``'s ``frozen_once``, ``warn_after_steps``, ``spaces``,
    ``eval_methods``, ``publisher``, ``publisher_options``. Never raises unless ``strict=True`` or
    ``ACESTEP_VIZ_STRICT`` is set: a problem is logged once and an ``Unwatched`` is returned.
    """
    strict = options.pop("strict", None)
    watching = start_or_warn(lambda: _watch(module, fabric, options),
                             f"watch({type(module).__name__}) (preset acestep15)", strict)
    return Unwatched() if watching is None else watching


def _watch(module: Any, fabric: Any, options: dict) -> Tap | Unwatched:
    unknown = sorted(set(options) - set(SETTING_OPTIONS) - set(ATTACH_OPTIONS))
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(SETTING_OPTIONS + ATTACH_OPTIONS)}")
    config = resolve(TRAINER_SETTINGS, flags={name: options.pop(name, None) for name in SETTING_OPTIONS})
    if not config["enabled"]:
        log.info("acestep_viz: monitor disabled (ACESTEP_VIZ_ENABLED=false)")
        return Unwatched()
    _, dit = find_dit(module)
    previous = _WATCHING.pop(dit, None)
    if previous is not None:
        previous.close()
    publisher_options = dict(options.pop("publisher_options", None) or {})
    if config["curve_dir"]:
        publisher_options.setdefault("curve_dir", config["curve_dir"])
    tap = attach(module, preset="acestep15", endpoint=config["endpoint"], run=_run_name(config["run"], fabric),
                 every_n_steps=config["every_n_steps"], lora_output=config["lora_output"],
                 lora_layers=config["lora_layers"] or None, all_ranks=config["all_ranks"], rank=_rank(fabric),
                 publisher_options=publisher_options, adapter_every=config["adapter_every"], **options)
    _WATCHING[dit] = tap
    return tap


def _rank(fabric: Any) -> int:
    rank = getattr(fabric, "global_rank", None)
    return int(rank) if isinstance(rank, int) else default_rank()


def _run_name(run: str | None, fabric: Any) -> str:
    """The given name, else the start time, taken from rank 0 so that every rank names the run alike."""
    if run:
        return check_run_name(run)
    run = default_run_name()
    if int(getattr(fabric, "world_size", 1) or 1) > 1:
        run = fabric.broadcast(run, src=0)
    return check_run_name(run)
