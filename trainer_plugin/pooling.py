"""Pool activations of any length to one fixed-size vector per batch row.

Pure torch functions: no gradient, no host sync, no Python loops over elements. Reductions run
in float32 (bf16/fp16 sums lose digits quickly). What the tap runs on the training thread is
``pool_sum``: one reduction per capture, with the division by the length (and the flattening)
left to numpy where frames are built, because on small tensors every torch call costs as much
as the reduction itself. The float16 wire values are clamped to float16's finite range, so one
large activation cannot turn a whole row into Inf.
"""
from __future__ import annotations

import torch
from acestep_viz.trainer_plugin.step_record import FLOAT16_MAX, scaled_rows


def pool_sum(x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, float | torch.Tensor]:
    """``(sums, divisor)``: a fresh C-contiguous float32 tensor, one leading entry per row, whose rows flattened and
    divided by ``divisor`` are the pooled vectors (what ``pool_float32`` returns). The divisor is a
    length, or for a masked sequence the (B, T) float32 weights, whose row sums divide.

    1-D: one vector; 2-D: already pooled; 3-D: a sequence (B, T, D), mean over T of the positions
    where the 0/1 attention ``mask`` (B, T) is 1 (weighted by the mask: a row with no such position
    pools to zeros); 4-D and more: channels x ... x time, averaged over the last (time) axis.
    Working on ``x.detach()`` records no graph, so no ``torch.no_grad()`` block is needed: entering
    one costs more than the pooling itself (its Python code is cold between training steps).
    """
    if x.requires_grad:
        x = x.detach()  # only then: every torch call costs microseconds (the mask is only compared)
    dims = x.dim()
    if dims <= 2:
        return x.to(torch.float32, memory_format=torch.contiguous_format, copy=True), 1.0
    if dims == 3:
        if mask is None:
            return x.sum(dim=1, dtype=torch.float32), float(x.shape[1])  # accumulates without a float32 copy of x
        return _masked_sum(x, mask)
    return x.sum(dim=-1, dtype=torch.float32), float(x.shape[-1])


def pool_float32(x: torch.Tensor, mask: torch.Tensor | None = None, scale: float = 1.0) -> torch.Tensor:
    """(rows, features) float32 pooled vectors on the host, multiplied by ``scale``: ``pool_sum`` divided
    the way frames are built (``step_record.scaled_rows``)."""
    sums, divisor = pool_sum(x, mask)
    rows = sums.shape[0] if sums.dim() > 1 else 1
    if isinstance(divisor, torch.Tensor):  # mask weights: each row is divided by their sum
        return torch.from_numpy(scaled_rows(sums.cpu().numpy(), rows, scale, divisor.cpu().numpy()))
    return torch.from_numpy(scaled_rows(sums.cpu().numpy(), rows, scale / divisor))


def pool_any(x: torch.Tensor, mask: torch.Tensor | None = None, scale: float = 1.0) -> torch.Tensor:
    """``pool_float32`` as float16, the wire dtype."""
    return _to_wire(pool_float32(x, mask, scale))


def pool_sequence(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B, T, D) -> (B, D) float16: mean over T, counting only positions where ``mask`` (B, T) is non-zero."""
    if x.dim() != 3:
        raise ValueError(f"expected a (batch, sequence, features) tensor, got shape {tuple(x.shape)}")
    return pool_any(x, mask)


def pool_latent(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, T) audio latents -> (B, C * H) float16: mean over time T."""
    if x.dim() < 4:
        raise ValueError(f"expected a (batch, channels, height, time) tensor, got shape {tuple(x.shape)}")
    return pool_any(x)


def _masked_sum(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """((B, 1, D) weighted sums, (B, T) weights): one batched product; the division is left to numpy."""
    if tuple(mask.shape) != tuple(x.shape[:2]):
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not match sequence shape {tuple(x.shape[:2])}")
    # a copy even when the mask is float32 already: it is read later, when the step is sent
    weights = mask.to(device=x.device, dtype=torch.float32, memory_format=torch.contiguous_format, copy=True)
    if weights.requires_grad:  # a float mask that requires grad
        weights = weights.detach()
    return torch.bmm(weights.unsqueeze(1), x if x.dtype == torch.float32 else x.float()), weights


def _to_wire(pooled: torch.Tensor) -> torch.Tensor:
    return pooled.clamp(-FLOAT16_MAX, FLOAT16_MAX).to(torch.float16)
