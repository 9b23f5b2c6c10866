"""The model parts of the ACE-Step 1.5 twin: tiny, randomly initialised, the real module paths.

Names and call patterns follow ACE-Step 1.5's ``AceStepConditionGenerationModel``, because the
monitor finds its DiT by class name and its LoRA layers by path below it:
- ``decoder`` is an ``AceStepDiTModel`` with ``layers.{i}.self_attn`` / ``cross_attn`` holding
  ``q_proj, k_proj, v_proj, o_proj`` (grouped-query attention: k/v narrower than q/o) and an ``mlp``,
  plus ``time_embed``, ``time_embed_r``, ``condition_embedder``, ``proj_in``, ``proj_out``;
- its ``forward`` takes ``timestep=`` and calls ``self.time_embed(timestep)`` as a module call,
  concatenates ``context_latents`` with the noisy latents, patchifies, and sets both attention
  masks to None (padded frames take part in attention);
- each DiT layer is a transformers ``GradientCheckpointingLayer`` (checkpointed per layer in training);
- ``encoder`` is the condition encoder, run only by preprocessing (``data.py``), never in training;
- ``null_condition_emb`` replaces the condition for classifier-free-guidance dropout.
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

try:
    from transformers.modeling_layers import GradientCheckpointingLayer as _LayerBase
except ImportError:  # older transformers: the DiT checkpoints its layers itself
    _LayerBase = nn.Module

LATENT_DIM = 64  # AutoencoderOobleck latent channels
CONTEXT_DIM = 128  # source latents + chunk masks, concatenated with the noisy latents
CONDITION_DIM = 2048  # the condition encoder's output (encoder_hidden_states)
TIMESTEP_CHANNELS = 256


class Lambda(nn.Module):
    """A function as a module, as the real DiT uses around its patch convolutions."""

    def __init__(self, func):
        super().__init__()
        self.func = func

    def forward(self, x):
        return self.func(x)


def _to_channels(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(1, 2)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class TimestepEmbedding(nn.Module):
    """t -> (temb (B, D), timestep_proj (B, 6, D)): sinusoidal features, an MLP, and six modulations."""

    def __init__(self, hidden: int, channels: int = TIMESTEP_CHANNELS):
        super().__init__()
        self.channels = channels
        self.linear_1 = nn.Linear(channels, hidden)
        self.linear_2 = nn.Linear(hidden, hidden)
        self.time_proj = nn.Linear(hidden, 6 * hidden)

    def forward(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        half = self.channels // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        args = (t.float() * 1000.0)[:, None] * freqs[None]
        features = torch.cat([torch.cos(args), torch.sin(args)], dim=-1).to(self.linear_1.weight.dtype)
        temb = self.linear_2(F.silu(self.linear_1(features)))
        proj = self.time_proj(F.silu(temb))
        return temb, proj.reshape(proj.shape[0], 6, -1)


class Attention(nn.Module):
    """Grouped-query attention: q and o span all heads, k and v only ``kv_heads`` (narrower)."""

    def __init__(self, hidden: int, heads: int, kv_heads: int, kv_input: int | None = None):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, hidden // heads
        kv_input = kv_input or hidden
        self.q_proj = nn.Linear(hidden, heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(kv_input, kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(kv_input, kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(heads * self.head_dim, hidden, bias=False)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(context).view(b, context.shape[1], self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(context).view(b, context.shape[1], self.kv_heads, self.head_dim).transpose(1, 2)
        repeat = self.heads // self.kv_heads
        k, v = k.repeat_interleave(repeat, dim=1), v.repeat_interleave(repeat, dim=1)
        out = F.scaled_dot_product_attention(q, k, v)  # masks are None, as in the real DiT's forward
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))


class MLP(nn.Module):
    def __init__(self, hidden: int, inner: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, inner, bias=False)
        self.up_proj = nn.Linear(hidden, inner, bias=False)
        self.down_proj = nn.Linear(inner, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class AceStepDiTLayer(_LayerBase):
    """Self-attention, cross-attention to the condition, MLP; AdaLN-modulated by the timestep."""

    def __init__(self, hidden: int, heads: int, kv_heads: int, inner: int):
        super().__init__()
        self.self_attn_norm = RMSNorm(hidden)
        self.self_attn = Attention(hidden, heads, kv_heads)
        self.cross_attn_norm = RMSNorm(hidden)
        self.cross_attn = Attention(hidden, heads, kv_heads)
        self.mlp_norm = RMSNorm(hidden)
        self.mlp = MLP(hidden, inner)
        self.scale_shift_table = nn.Parameter(torch.randn(1, 6, hidden) / hidden ** 0.5)

    def forward(self, hidden_states: torch.Tensor, timestep_proj: torch.Tensor,
                encoder_hidden_states: torch.Tensor) -> tuple[torch.Tensor]:
        shift, scale, gate, c_shift, c_scale, c_gate = (self.scale_shift_table + timestep_proj).chunk(6, dim=1)
        x = self.self_attn_norm(hidden_states) * (1 + scale) + shift
        hidden_states = hidden_states + gate * self.self_attn(x)
        hidden_states = hidden_states + self.cross_attn(self.cross_attn_norm(hidden_states), encoder_hidden_states)
        x = self.mlp_norm(hidden_states) * (1 + c_scale) + c_shift
        return (hidden_states + c_gate * self.mlp(x),)


class AceStepDiTModel(nn.Module):
    """The diffusion transformer (the generation model's ``decoder``)."""

    def __init__(self, hidden: int = 64, layers: int = 4, heads: int = 4, kv_heads: int = 2, patch_size: int = 2,
                 condition_dim: int = CONDITION_DIM):
        super().__init__()
        self.patch_size = patch_size
        self.layers = nn.ModuleList(AceStepDiTLayer(hidden, heads, kv_heads, 2 * hidden) for _ in range(layers))
        self.proj_in = nn.Sequential(Lambda(_to_channels),
                                     nn.Conv1d(CONTEXT_DIM + LATENT_DIM, hidden, patch_size, stride=patch_size),
                                     Lambda(_to_channels))
        self.time_embed = TimestepEmbedding(hidden)
        self.time_embed_r = TimestepEmbedding(hidden)
        self.condition_embedder = nn.Linear(condition_dim, hidden)
        self.norm_out = RMSNorm(hidden)
        self.proj_out = nn.Sequential(Lambda(_to_channels),
                                      nn.ConvTranspose1d(hidden, LATENT_DIM, patch_size, stride=patch_size),
                                      Lambda(_to_channels))
        self.scale_shift_table = nn.Parameter(torch.randn(1, 2, hidden) / hidden ** 0.5)
        self.gradient_checkpointing = False

    def gradient_checkpointing_enable(self) -> None:
        """Checkpoint every DiT layer (non-reentrant): their forwards run again during backward."""
        self.gradient_checkpointing = True
        for layer in self.layers:
            layer.gradient_checkpointing = True
            layer._gradient_checkpointing_func = functools.partial(checkpoint, use_reentrant=False)

    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor, timestep_r: torch.Tensor,
                attention_mask: torch.Tensor, encoder_hidden_states: torch.Tensor,
                encoder_attention_mask: torch.Tensor, context_latents: torch.Tensor, **_: object):
        temb_t, proj_t = self.time_embed(timestep)
        temb_r, proj_r = self.time_embed_r(timestep - timestep_r)
        temb, timestep_proj = temb_t + temb_r, proj_t + proj_r
        hidden_states = torch.cat([context_latents, hidden_states], dim=-1)
        length = hidden_states.shape[1]
        pad = -length % self.patch_size
        if pad:
            hidden_states = F.pad(hidden_states, (0, 0, 0, pad))
        hidden_states = self.proj_in(hidden_states)
        encoder_hidden_states = self.condition_embedder(encoder_hidden_states)
        # the masks are not used, as in the real forward (it sets both to None): padding is attended to
        for layer in self.layers:
            if _LayerBase is nn.Module and self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                hidden_states = checkpoint(layer, hidden_states, timestep_proj, encoder_hidden_states,
                                           use_reentrant=False)[0]
            else:
                hidden_states = layer(hidden_states, timestep_proj, encoder_hidden_states)[0]
        shift, scale = (self.scale_shift_table + temb.unsqueeze(1)).chunk(2, dim=1)
        hidden_states = self.norm_out(hidden_states) * (1 + scale) + shift
        hidden_states = self.proj_out(hidden_states)[:, :length]
        return hidden_states, None


class AceStepConditionEncoder(nn.Module):
    """Packs lyric and caption token features into one condition sequence (lyrics first, then text)."""

    def __init__(self, text_dim: int = 32, lyric_dim: int = 32, hidden: int = CONDITION_DIM):
        super().__init__()
        self.text_projector = nn.Linear(text_dim, hidden, bias=False)
        self.lyric_encoder = nn.Sequential(nn.Linear(lyric_dim, hidden), nn.Tanh())

    def forward(self, text_hidden_states: torch.Tensor, text_attention_mask: torch.Tensor,
                lyric_hidden_states: torch.Tensor, lyric_attention_mask: torch.Tensor):
        packed = torch.cat([self.lyric_encoder(lyric_hidden_states), self.text_projector(text_hidden_states)], dim=1)
        return packed, torch.cat([lyric_attention_mask, text_attention_mask], dim=1)


class AceStepConditionGenerationModel(nn.Module):
    """The generation model: ``decoder`` (trained with LoRA), ``encoder`` (preprocessing only)."""

    def __init__(self, hidden: int = 64, layers: int = 4, heads: int = 4, kv_heads: int = 2):
        super().__init__()
        self.decoder = AceStepDiTModel(hidden, layers, heads, kv_heads)
        self.encoder = AceStepConditionEncoder()
        self.null_condition_emb = nn.Parameter(torch.randn(1, 1, CONDITION_DIM))
