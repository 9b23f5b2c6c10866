"""The adapter's own update size: for each peft LoRA layer, ||scale * B A||_F / ||W||_F.

How far the adapter has moved the frozen weight it adapts, relative to that weight's size: it starts at
zero (peft initialises B to zero) and grows while the adapter learns ("LoRA Learns Less and Forgets
Less", Biderman et al. 2024, compare LoRA with full fine-tuning by this kind of weight change). A
figure that stays flat near zero says the adapter is not moving.

The product B A (out x in) is never formed: ||B A||_F^2 = trace((B^T B)(A A^T)) takes two r x r
products. Everything runs in float32 under ``torch.no_grad`` on the layers' device. Layers whose factors
share shapes, dtypes and devices are measured together, with batched products over their stacked factors
(at most ``MAX_STACK_BYTES`` of float32 copies at a time): a handful of kernels per shape instead of about
fifteen per layer. The sizes of all layers end in one tensor, so one small device-to-host copy carries
them (``AdapterProbe``).
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

MAX_STACK_BYTES = 64 << 20  # float32 factor copies one batched product may stack: a large adapter's add up


class AdapterPart(NamedTuple):
    """One active adapter of one peft LoRA layer: its two factors and the frozen weight it adapts."""

    name: str
    lora_a: torch.Tensor  # (r, in) or (r, in, *kernel)
    lora_b: torch.Tensor  # (out, r) or (out, r, 1, ...)
    scale: Callable[[], float]  # read at each measurement: peft's set_scale can change it
    base_weight: torch.Tensor


def low_rank_norms(lora_b: torch.Tensor, lora_a: torch.Tensor) -> torch.Tensor:
    """||B_i A_i||_F in float32 for stacked factor pairs, B (k, out, r, ...) and A (k, r, in, ...), from batched
    r x r products: ||B A||_F^2 = sum((B^T B) * (A A^T)) (both symmetric)."""
    count, rank = lora_a.shape[0], lora_a.shape[1]
    a = lora_a.detach().reshape(count, rank, -1).float()
    b = lora_b.detach().reshape(count, lora_b.shape[1], rank).float()
    squared = (torch.bmm(b.transpose(1, 2), b) * torch.bmm(a, a.transpose(1, 2))).sum(dim=(1, 2))
    return squared.clamp_min(0).sqrt()  # rounding can leave a tiny negative for B A near zero


def low_rank_norm(lora_b: torch.Tensor, lora_a: torch.Tensor) -> torch.Tensor:
    """||B A||_F in float32 for one layer's factors, B (out, r, ...) and A (r, in, ...)."""
    return low_rank_norms(lora_b.unsqueeze(0), lora_a.unsqueeze(0))[0]


def update_size(lora_b: torch.Tensor, lora_a: torch.Tensor, scale: float, weight_norm: torch.Tensor) -> torch.Tensor:
    """||scale * B A||_F / ||W||_F as a 0-d float32 tensor on the factors' device."""
    return abs(float(scale)) * low_rank_norm(lora_b, lora_a) / weight_norm.to(lora_a.device)


def batches_of(parts: list[AdapterPart]) -> list[list[int]]:
    """Indices of the parts measured together: same factor shapes, dtypes and devices, at most
    ``MAX_STACK_BYTES`` of float32 factors per batch."""
    groups: dict[tuple, list[int]] = {}
    for index, part in enumerate(parts):
        a, b = part.lora_a, part.lora_b
        groups.setdefault((a.shape, b.shape, a.dtype, b.dtype, a.device, b.device), []).append(index)
    batches = []
    for indices in groups.values():
        first = parts[indices[0]]
        per_batch = max(1, MAX_STACK_BYTES // (4 * (first.lora_a.numel() + first.lora_b.numel())))
        batches += [indices[start:start + per_batch] for start in range(0, len(indices), per_batch)]
    return batches


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
    ``publish``. ``measure`` runs on the training thread: batched r x r products per group of same-shaped
    layers and the start of one non-blocking copy; the publisher's sender thread waits for the copy and
    builds the message. Errors are counted in ``errors`` (an ``ErrorLog``), never raised."""

    def __init__(self, model: nn.Module, run: str, every: int, publish: Callable[[Any], bool], errors: Any,
                 rank: int = 0):
        self.run, self.every, self.rank = run, int(every), rank
        self._publish, self._errors = publish, errors
        self.parts, lycoris = lora_parts(model) if self.every > 0 else ([], 0)
        if lycoris:
            log.info("acestep_viz: %d LyCORIS modules (LoKr, LoHa, ...) are skipped by the adapter update size, "
                     "which reads peft LoRA layers", lycoris)
        self._batches: list[_Batch] | None = None  # built at the first measurement, frozen weights' norms included
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
            parts = self.parts
            with torch.no_grad():
                if self._batches is None:
                    self._batches = [_Batch.of(parts, indices) for indices in batches_of(parts)]
                ratios = [batch.ratios(parts) for batch in self._batches]
                device = ratios[0].device
                stacked = torch.cat([r.to(device, non_blocking=True) for r in ratios]) if len(ratios) > 1 else ratios[0]
                host, event = to_host(stacked)
            scales = [abs(float(part.scale())) for part in parts]
            order = [index for batch in self._batches for index in batch.indices]
            message = _Deferred(self.run, int(step), self.rank, [p.name for p in parts], host, order, scales, event,
                                time.time())
            queued = bool(self._publish(message))
            self.queued += queued
            return queued
        except Exception as exc:
            self._errors.record("adapter_size", exc)
            return False


class _Batch(NamedTuple):
    """Layers measured together (``batches_of``), with their frozen weights' norms, measured once."""

    indices: list[int]
    weight_norms: torch.Tensor  # (k,) float32 on the factors' device

    @classmethod
    def of(cls, parts: list[AdapterPart], indices: list[int]) -> "_Batch":
        device = parts[indices[0]].lora_a.device
        return cls(indices, torch.stack([parts[i].base_weight.detach().float().norm().to(device) for i in indices]))

    def ratios(self, parts: list[AdapterPart]) -> torch.Tensor:
        """||B A||_F / ||W||_F of each layer, unscaled."""
        lora_b = torch.stack([parts[i].lora_b for i in self.indices])
        lora_a = torch.stack([parts[i].lora_a for i in self.indices])
        return low_rank_norms(lora_b, lora_a) / self.weight_norms


class _Deferred:
    """An adapter message whose values are still on their way to the host; called on the sender thread.
    ``host`` holds the unscaled sizes in measuring order (``order``: the layer of each); the message lists
    the layers in the model's order, each times its scale read when it was measured."""

    __slots__ = ("run", "step", "rank", "names", "host", "order", "scales", "event", "sent_at")
    frames = 1

    def __init__(self, run, step, rank, names, host, order, scales, event, sent_at):
        self.run, self.step, self.rank, self.names, self.host = run, step, rank, names, host
        self.order, self.scales, self.event, self.sent_at = order, scales, event, sent_at

    def __call__(self) -> AdapterSizes | None:
        if self.event is not None:
            self.event.synchronize()
        values = [0.0] * len(self.names)
        for index, value in zip(self.order, self.host.tolist()):
            values[index] = value * self.scales[index]
        layers = {name: value for name, value in zip(self.names, values) if value == value and value != float("inf")}
        if not layers:
            return None  # every size is NaN or Inf: the adapter diverged, the loss shows it
        return AdapterSizes(run=self.run, step=self.step, layers=layers, rank=self.rank, sent_at=self.sent_at)
