"""Pool activations of any length to one fixed-size vector per batch row.

Pure torch functions, safe to call inside forward hooks: no gradient, no host sync, no Python
loops over elements. Reductions run in float32 (bf16/fp16 sums lose digits quickly); the result
is float16, the wire dtype, clamped to its finite range so one large activation cannot turn a
whole row into Inf.
"""
from __future__ import annotations

import torch

from trainer_plugin.step_record import FLOAT16_MAX


def pool_sequence(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B, T, D) -> (B, D): mean over T, counting only positions where ``mask`` (B, T) is non-zero.

    A row whose mask is all zero pools to zeros.
    """
    with torch.no_grad():
        return _to_wire(_sequence_mean(x.detach(), mask))


def pool_latent(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, T) audio latents -> (B, C * H): mean over time T."""
    with torch.no_grad():
        return _to_wire(_latent_mean(x.detach()))


def pool_any(x: torch.Tensor, mask: torch.Tensor | None = None, scale: float = 1.0) -> torch.Tensor:
    """Pool 1-D to N-D activations to (B, D) float16, multiplied by ``scale``.

    1-D: one vector; 2-D: already pooled; 3-D: a sequence (mask-aware); 4-D and more:
    channels x ... x time, averaged over the last (time) axis and flattened.
    """
    return _to_wire(pool_float32(x, mask, scale))


def pool_float32(x: torch.Tensor, mask: torch.Tensor | None = None, scale: float = 1.0) -> torch.Tensor:
    """``pool_any`` before the float16 conversion: what a hook runs, one reduction, a fresh tensor.

    Clamping and float16 happen later where frames are built (``step_record.to_wire``), off the
    training step. Working on ``x.detach()`` records no graph, so no ``torch.no_grad()`` block is
    needed: entering one costs more than the pooling itself in a hook (its Python code is cold
    between training steps). A mask that requires grad is fine: it is only compared with zero.
    """
    if x.requires_grad:
        x = x.detach()  # only then: every torch call in a hook costs microseconds (the mask is only compared)
    if x.dim() <= 2:
        pooled = x.to(torch.float32, copy=True).reshape(-1 if x.dim() == 1 else x.shape[0], x.shape[-1])
    elif x.dim() == 3:
        pooled = _sequence_mean(x, mask)
    else:
        pooled = _latent_mean(x)
    return pooled * scale if scale != 1.0 else pooled


def _sequence_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if x.dim() != 3:
        raise ValueError(f"expected a (batch, sequence, features) tensor, got shape {tuple(x.shape)}")
    if mask is None:
        return x.mean(dim=1, dtype=torch.float32)  # accumulates in float32 without a float32 copy of x
    if tuple(mask.shape) != tuple(x.shape[:2]):
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not match sequence shape {tuple(x.shape[:2])}")
    weights = (mask != 0).to(device=x.device, dtype=torch.float32)
    total = torch.bmm(weights.unsqueeze(1), x.float()).squeeze(1)
    count = weights.sum(dim=1, keepdim=True).clamp(min=1.0)
    return total / count


def _latent_mean(x: torch.Tensor) -> torch.Tensor:
    if x.dim() < 4:
        raise ValueError(f"expected a (batch, channels, height, time) tensor, got shape {tuple(x.shape)}")
    return x.mean(dim=-1, dtype=torch.float32).flatten(start_dim=1)


def _to_wire(pooled: torch.Tensor) -> torch.Tensor:
    return pooled.clamp(-FLOAT16_MAX, FLOAT16_MAX).to(torch.float16)
