"""The adapter's own update size: for each peft LoRA layer, ||scale * B A||_F / ||W||_F.

How far the adapter has moved the frozen weight it adapts, relative to that weight's size: it starts at
zero (peft initialises B to zero) and grows while the adapter learns ("LoRA Learns Less and Forgets
Less", Biderman et al. 2024, compare LoRA with full fine-tuning by this kind of weight change). A
figure that stays flat near zero says the adapter is not moving.

The product B A (out x in) is never formed: ||B A||_F^2 = trace((B^T B)(A A^T)) takes two r x r
products. Everything runs in float32 under ``torch.no_grad`` on the layer's device; the sizes of all
layers are stacked into one tensor, so one small device-to-host copy carries them (``AdapterProbe``).
``scale`` is peft's ``scaling[adapter]``: alpha / r, or alpha / sqrt(r) with rslora. For a DoRA layer
the figure is the same low-rank part; its magnitude vector's change is not included. LyCORIS modules
(LoKr, LoHa) are not peft layers: they are skipped, with one log line.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable, NamedTuple

import torch
from torch import nn

from acestep_viz.wire import MAX_ADAPTER_LAYERS, MAX_NAME_CHARS, AdapterSizes

log = logging.getLogger("acestep_viz")


class AdapterPart(NamedTuple):
    """One active adapter of one peft LoRA layer: its two factors and the frozen weight it adapts."""

    name: str
    lora_a: torch.Tensor  # (r, in) or (r, in, *kernel)
    lora_b: torch.Tensor  # (out, r) or (out, r, 1, ...)
    scale: Callable[[], float]  # read at each measurement: peft's set_scale can change it
    base_weight: torch.Tensor


def low_rank_norm(lora_b: torch.Tensor, lora_a: torch.Tensor) -> torch.Tensor:
    """||B A||_F in float32, from r x r products: ||B A||_F^2 = sum((B^T B) * (A A^T)) (both symmetric)."""
    rank = lora_a.shape[0]
    a = lora_a.detach().reshape(rank, -1).float()
    b = lora_b.detach().reshape(lora_b.shape[0], rank).float()
    squared = ((b.T @ b) * (a @ a.T)).sum()
    return squared.clamp_min(0).sqrt()  # rounding can leave a tiny negative for B A near zero


def update_size(lora_b: torch.Tensor, lora_a: torch.Tensor, scale: float, weight_norm: torch.Tensor) -> torch.Tensor:
    """||scale * B A||_F / ||W||_F as a 0-d float32 tensor on the factors' device."""
    return abs(float(scale)) * low_rank_norm(lora_b, lora_a) / weight_norm.to(lora_a.device)


def lora_parts(model: nn.Module) -> tuple[list[AdapterPart], int]:
    """Every active adapter of every peft LoRA layer in ``model`` (named by module path, plus ``[adapter]``
    when a layer has several), and how many LyCORIS modules were found (they are skipped)."""
    parts, lycoris = [], 0
    for path, module in model.named_modules():
        if type(module).__module__.startswith("lycoris"):
            lycoris += 1
            continue
        lora_a, lora_b = getattr(module, "lora_A", None), getattr(module, "lora_B", None)
        base = getattr(module, "base_layer", None)
        weight = getattr(base, "weight", None)
        if not isinstance(lora_a, nn.ModuleDict) or not isinstance(lora_b, nn.ModuleDict) or weight is None:
            continue
        adapters = [a for a in getattr(module, "active_adapters", ()) if a in lora_a and a in lora_b]
        for adapter in adapters:
            a, b = lora_a[adapter].weight, lora_b[adapter].weight
            if a.dim() < 2 or b.dim() < 2 or b[0].numel() != a.shape[0]:
                continue  # not a low-rank pair B A (a kernel on B): no r x r shortcut
            name = path + (f"[{adapter}]" if len(adapters) > 1 else "")
            parts.append(AdapterPart(name[-MAX_NAME_CHARS:], a, b, _scale_of(module, adapter), weight))
    return parts[:MAX_ADAPTER_LAYERS], lycoris


def _scale_of(module: nn.Module, adapter: str) -> Callable[[], float]:
    return lambda: float(module.scaling[adapter])


class AdapterProbe:
    """Measures every LoRA layer's update size every ``every`` steps and hands one deferred message to
    ``publish``. ``measure`` runs on the training thread: a few r x r products per layer and the start of
    one non-blocking copy; the publisher's sender thread waits for the copy and builds the message.
    Errors are counted in ``errors`` (an ``ErrorLog``), never raised."""

    def __init__(self, model: nn.Module, run: str, every: int, publish: Callable[[Any], bool], errors: Any,
                 rank: int = 0):
        self.run, self.every, self.rank = run, int(every), rank
        self._publish, self._errors = publish, errors
        self.parts, lycoris = lora_parts(model) if self.every > 0 else ([], 0)
        if lycoris:
            log.info("acestep_viz: %d LyCORIS modules (LoKr, LoHa, ...) are skipped by the adapter update size, "
                     "which reads peft LoRA layers", lycoris)
        self._weight_norms: list[torch.Tensor] | None = None  # the frozen weights' norms, measured once
        self.queued = 0  # messages the publisher took

    @property
    def active(self) -> bool:
        return self.every > 0 and bool(self.parts)

    def due(self, step: int) -> bool:
        return self.active and int(step) % self.every == 0

    def measure(self, step: int) -> bool:
        """Measure now and queue the message; False when nothing was sent (not active, or an error)."""
        if not self.active:
            return False
        from acestep_viz.trainer_plugin.tap import to_host  # tap imports this module

        try:
            with torch.no_grad():
                if self._weight_norms is None:
                    self._weight_norms = [part.base_weight.detach().float().norm() for part in self.parts]
                sizes = [update_size(p.lora_b, p.lora_a, p.scale(), norm)
                         for p, norm in zip(self.parts, self._weight_norms)]
                device = sizes[0].device
                stacked = torch.stack([s.to(device, non_blocking=True) for s in sizes])
                host, event = to_host(stacked)
            names = [p.name for p in self.parts]
            message = _Deferred(self.run, int(step), self.rank, names, host, event, time.time())
            queued = bool(self._publish(message))
            self.queued += queued
            return queued
        except Exception as exc:
            self._errors.record("adapter_size", exc)
            return False


class _Deferred:
    """An adapter message whose values are still on their way to the host; called on the sender thread."""

    __slots__ = ("run", "step", "rank", "names", "host", "event", "sent_at")
    frames = 1

    def __init__(self, run, step, rank, names, host, event, sent_at):
        self.run, self.step, self.rank, self.names = run, step, rank, names
        self.host, self.event, self.sent_at = host, event, sent_at

    def __call__(self) -> AdapterSizes | None:
        if self.event is not None:
            self.event.synchronize()
        values = self.host.tolist()
        layers = {name: value for name, value in zip(self.names, values) if value == value and value != float("inf")}
        if not layers:
            return None  # every size is NaN or Inf: the adapter diverged, the loss shows it
        return AdapterSizes(run=self.run, step=self.step, layers=layers, rank=self.rank, sent_at=self.sent_at)

