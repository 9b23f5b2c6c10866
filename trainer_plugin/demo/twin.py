"""The model parts of the ACE-Step twin: tiny, randomly initialised, same module paths.

Module names and call patterns follow ACE-Step's `trainer.py` Pipeline, because the monitor
finds its hook points by those paths:
- `MusicDCAE.encode()` is a plain method that calls `self.dcae.encoder(mel)` once per clip;
- the text encoder is a real `transformers.UMT5EncoderModel`, called with keyword arguments;
- `TwinTransformer` has `transformer_blocks.{i}.attn/cross_attn.{to_q,to_k,to_v,to_out.0}`,
  `speaker_embedder`, `genre_embedder` and `lyric_encoder.encoders.{i}.self_attn.linear_{q,k,v}`,
  and checkpoints each block in training.
"""
from __future__ import annotations

import math
import re
import zlib
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

LATENT_CHANNELS = 8
LATENT_HEIGHT = 16
MEL_BINS = 128
DOWNSAMPLE = 8  # the encoder halves mel bins and frames three times
SPEAKER_DIM = 512


# ---------------------------------------------------------------------------- audio autoencoder

def mel_filterbank(n_fft: int, sample_rate: int, n_mels: int, f_min: float = 20.0) -> torch.Tensor:
    """Triangular HTK-mel filters, shape (n_fft // 2 + 1, n_mels)."""
    def to_mel(hz):
        return 2595.0 * torch.log10(1.0 + hz / 700.0)

    def to_hz(mel):
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)

    bin_hz = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = to_hz(torch.linspace(to_mel(torch.tensor(f_min)), to_mel(torch.tensor(sample_rate / 2)), n_mels + 2))
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bin_hz[:, None] - lower) / (centre - lower)
    falling = (upper - bin_hz[:, None]) / (upper - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0)


class TinyAutoencoderDC(nn.Module):
    """Stands in for diffusers' AutoencoderDC: (1, 2, 128, T_mel) -> (1, 8, 16, T_mel / 8)."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(2, width, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(width, width, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(width, LATENT_CHANNELS, 3, stride=2, padding=1),
        )


class MusicDCAE(nn.Module):
    """Frozen audio -> latent wrapper. `encode` is a plain method, so hooks on this module never fire."""

    def __init__(self, sample_rate: int = 4000, n_fft: int = 1024, hop: int = 64,
                 shift_factor: float = 0.0, scale_factor: float = 1.0):
        super().__init__()
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.hop = hop
        self.shift_factor = shift_factor
        self.scale_factor = scale_factor
        self.min_mel_value, self.max_mel_value = -11.0, 3.0
        self.dcae = TinyAutoencoderDC()
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.register_buffer("mel_basis", mel_filterbank(n_fft, sample_rate, MEL_BINS), persistent=False)

    def forward_mel(self, wav: torch.Tensor) -> torch.Tensor:
        """(channels, samples) -> normalised log-mel (1, channels, 128, frames)."""
        spec = torch.stft(wav, self.n_fft, self.hop, window=self.window, center=True, return_complex=True)
        mel = torch.einsum("cft,fm->cmt", spec.abs(), self.mel_basis)
        mel = torch.log(mel.clamp(min=1e-5))
        mel = (mel - self.min_mel_value) / (self.max_mel_value - self.min_mel_value) * 2.0 - 1.0
        return mel.unsqueeze(0)

    @torch.no_grad()
    def encode(self, audios: torch.Tensor, audio_lengths: torch.Tensor | None = None):
        """(B, 2, N) waveforms -> ((B, 8, 16, T_max) latents, (B,) latent lengths)."""
        if audio_lengths is None:
            audio_lengths = torch.full((audios.shape[0],), audios.shape[-1], dtype=torch.long)
        # Pad each clip to whole latent frames, so the mel length divides by the downsampling.
        frame = self.hop * DOWNSAMPLE
        latents = []
        for wav, length in zip(audios, audio_lengths.tolist()):
            clip = wav[:, :length]
            clip = F.pad(clip, (0, -length % frame))
            mel = self.forward_mel(clip)[..., : clip.shape[-1] // self.hop]
            latents.append(self.dcae.encoder(mel)[0])
        lengths = torch.tensor([lat.shape[-1] for lat in latents], dtype=torch.long, device=audios.device)
        t_max = int(lengths.max())
        padded = [F.pad((lat - self.shift_factor) * self.scale_factor, (0, t_max - lat.shape[-1])) for lat in latents]
        return torch.stack(padded), lengths


# ---------------------------------------------------------------------------- text encoder

class WordTokenizer:
    """A deterministic word-level tokenizer with HF's call convention. Ids are stable hashes of words."""

    pad_token_id = 0
    eos_token_id = 1

    def __init__(self, vocab_size: int = 512):
        self.vocab_size = vocab_size

    def word_id(self, word: str) -> int:
        return 2 + zlib.crc32(word.encode("utf-8")) % (self.vocab_size - 2)

    def encode(self, text: str, max_length: int | None = None) -> list[int]:
        ids = [self.word_id(w) for w in re.findall(r"[\w']+", text.lower())]
        if max_length is not None:
            ids = ids[: max_length - 1]
        return ids + [self.eos_token_id]

    def __call__(self, texts, return_tensors: str = "pt", padding: bool = True, truncation: bool = True,
                 max_length: int = 256) -> dict[str, torch.Tensor]:
        if isinstance(texts, str):
            texts = [texts]
        rows = [self.encode(t, max_length if truncation else None) for t in texts]
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, : len(row)] = torch.tensor(row)
            attention_mask[i, : len(row)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}


def build_text_encoder(vocab_size: int = 512, d_model: int = 64):
    """A tiny, randomly initialised UMT5 encoder. Dropout off: a clip's prompt vector never changes."""
    from transformers import UMT5Config, UMT5EncoderModel

    config = UMT5Config(vocab_size=vocab_size, d_model=d_model, d_kv=16, d_ff=128, num_layers=2,
                        num_heads=4, dropout_rate=0.0, pad_token_id=0, eos_token_id=1)
    return UMT5EncoderModel(config)


# ---------------------------------------------------------------------------- transformer

@dataclass
class Transformer2DModelOutput:
    sample: torch.Tensor
    proj_losses: list = field(default_factory=list)


def key_mask(mask: torch.Tensor) -> torch.Tensor:
    """(B, S) 0/1 mask -> (B, 1, 1, S) boolean mask for scaled_dot_product_attention."""
    return mask.bool()[:, None, None, :]


class Attention(nn.Module):
    """Multi-head attention with diffusers' names. The `add_*` projections exist but are never called,
    as in ACE-Step's cross-attention."""

    def __init__(self, dim: int, heads: int, context_dim: int | None = None, with_added_proj: bool = False):
        super().__init__()
        context_dim = context_dim or dim
        self.heads = heads
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(context_dim, dim)
        self.to_v = nn.Linear(context_dim, dim)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim), nn.Dropout(0.0)])
        if with_added_proj:
            self.add_q_proj = nn.Linear(context_dim, dim)
            self.add_k_proj = nn.Linear(context_dim, dim)
            self.add_v_proj = nn.Linear(context_dim, dim)
            self.to_add_out = nn.Linear(dim, context_dim)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        return x.view(b, s, self.heads, d // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, mask: torch.Tensor | None = None):
        context = x if context is None else context
        q = self.split_heads(self.to_q(x))
        k, v = self.split_heads(self.to_k(context)), self.split_heads(self.to_v(context))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=None if mask is None else key_mask(mask))
        out = out.transpose(1, 2).reshape(x.shape)
        return self.to_out[1](self.to_out[0](out))


class TransformerBlock(nn.Module):
    """adaLN-modulated self-attention over latent frames, cross-attention to conditions, MLP."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False)
        self.attn = Attention(dim, heads)
        self.cross_attn = Attention(dim, heads, with_added_proj=True)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False)
        self.ff = nn.Sequential(nn.Linear(dim, 2 * dim), nn.SiLU(), nn.Linear(2 * dim, dim))
        self.scale_shift_table = nn.Parameter(torch.randn(6, dim) / dim ** 0.5)

    def forward(self, x, mask, context, context_mask, temb):
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
            self.scale_shift_table[None] + temb.view(x.shape[0], 6, -1)).chunk(6, dim=1)
        h = self.norm1(x) * (1 + scale_msa) + shift_msa
        x = x + gate_msa * self.attn(h, mask=mask)
        x = x + self.cross_attn(x, context, mask=context_mask)
        h = self.norm2(x) * (1 + scale_mlp) + shift_mlp
        return x + gate_mlp * self.ff(h)


class ConformerLayer(nn.Module):
    """Lyric encoder layer with espnet's attention names (linear_q/k/v/out)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm_mha = nn.LayerNorm(dim)
        self.self_attn = nn.Module()
        self.self_attn.linear_q = nn.Linear(dim, dim)
        self.self_attn.linear_k = nn.Linear(dim, dim)
        self.self_attn.linear_v = nn.Linear(dim, dim)
        self.self_attn.linear_out = nn.Linear(dim, dim)
        self.norm_ff = nn.LayerNorm(dim)
        self.feed_forward = nn.Sequential(nn.Linear(dim, 2 * dim), nn.SiLU(), nn.Linear(2 * dim, dim))
        self.heads = heads

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        attn = self.self_attn
        h = self.norm_mha(x)
        b, s, d = h.shape
        q, k, v = (lin(h).view(b, s, self.heads, d // self.heads).transpose(1, 2)
                   for lin in (attn.linear_q, attn.linear_k, attn.linear_v))
        # A fully masked row (CFG-dropped lyrics) would give NaN: let such rows attend to themselves.
        allowed = key_mask(mask) | torch.eye(s, dtype=torch.bool, device=x.device)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed).transpose(1, 2).reshape(b, s, d)
        x = x + attn.linear_out(out)
        return x + self.feed_forward(self.norm_ff(x))


class LyricEncoder(nn.Module):
    def __init__(self, dim: int, heads: int, layers: int):
        super().__init__()
        self.encoders = nn.ModuleList([ConformerLayer(dim, heads) for _ in range(layers)])

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        for layer in self.encoders:
            x = layer(x, mask)
        return x


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=timesteps.device) / half)
    args = timesteps.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TwinTransformer(nn.Module):
    """ACEStepTransformer2DModel in miniature: (B, 8, 16, T) noisy latents -> velocity of the same shape."""

    def __init__(self, inner_dim: int = 64, heads: int = 4, num_layers: int = 4, text_dim: int = 64,
                 lyric_vocab_size: int = 256, lyric_dim: int = 32, lyric_heads: int = 2, lyric_layers: int = 6,
                 freq_dim: int = 64):
        super().__init__()
        patch = LATENT_CHANNELS * LATENT_HEIGHT
        self.inner_dim = inner_dim
        self.freq_dim = freq_dim
        self.gradient_checkpointing = False
        self.transformer_blocks = nn.ModuleList([TransformerBlock(inner_dim, heads) for _ in range(num_layers)])
        self.time_embedder = nn.Sequential(nn.Linear(freq_dim, inner_dim), nn.SiLU(), nn.Linear(inner_dim, inner_dim))
        self.t_block = nn.Sequential(nn.SiLU(), nn.Linear(inner_dim, 6 * inner_dim))
        self.speaker_embedder = nn.Linear(SPEAKER_DIM, inner_dim)
        self.genre_embedder = nn.Linear(text_dim, inner_dim)
        self.lyric_embs = nn.Embedding(lyric_vocab_size, lyric_dim)
        self.lyric_encoder = LyricEncoder(lyric_dim, lyric_heads, lyric_layers)
        self.lyric_proj = nn.Linear(lyric_dim, inner_dim)
        self.proj_in = nn.Linear(patch, inner_dim)
        self.norm_out = nn.LayerNorm(inner_dim, elementwise_affine=False)
        self.final_scale_shift = nn.Linear(inner_dim, 2 * inner_dim)
        self.proj_out = nn.Linear(inner_dim, patch)

    def enable_gradient_checkpointing(self):
        self.gradient_checkpointing = True

    def encode(self, encoder_text_hidden_states, text_attention_mask, speaker_embeds, lyric_token_idx, lyric_mask):
        """Conditions -> one sequence for cross-attention: [speaker, prompt tokens, lyric tokens]."""
        speaker = self.speaker_embedder(speaker_embeds).unsqueeze(1)
        genre = self.genre_embedder(encoder_text_hidden_states)
        lyric = self.lyric_proj(self.lyric_encoder(self.lyric_embs(lyric_token_idx), lyric_mask))
        speaker_mask = torch.ones(speaker.shape[0], 1, device=speaker.device, dtype=text_attention_mask.dtype)
        states = torch.cat([speaker, genre, lyric], dim=1)
        mask = torch.cat([speaker_mask, text_attention_mask, lyric_mask.to(text_attention_mask.dtype)], dim=1)
        return states, mask

    def decode(self, hidden_states, attention_mask, encoder_hidden_states, encoder_hidden_mask, timestep):
        b, c, h, t = hidden_states.shape
        x = self.proj_in(hidden_states.reshape(b, c * h, t).transpose(1, 2))
        emb = self.time_embedder(timestep_embedding(timestep, self.freq_dim).to(x.dtype))
        temb = self.t_block(emb)
        for block in self.transformer_blocks:
            args = (x, attention_mask, encoder_hidden_states, encoder_hidden_mask, temb)
            if self.training and self.gradient_checkpointing:
                x = checkpoint(block, *args, use_reentrant=False)
            else:
                x = block(*args)
        scale, shift = self.final_scale_shift(emb).unsqueeze(1).chunk(2, dim=-1)
        x = self.proj_out(self.norm_out(x) * (1 + scale) + shift)
        return x.transpose(1, 2).reshape(b, c, h, t)

    def forward(self, hidden_states, attention_mask, encoder_text_hidden_states=None, text_attention_mask=None,
                speaker_embeds=None, lyric_token_idx=None, lyric_mask=None, timestep=None,
                ssl_hidden_states=None) -> Transformer2DModelOutput:
        states, mask = self.encode(encoder_text_hidden_states, text_attention_mask, speaker_embeds,
                                   lyric_token_idx, lyric_mask)
        sample = self.decode(hidden_states, attention_mask, states, mask, timestep)
        return Transformer2DModelOutput(sample=sample, proj_losses=[])


# ---------------------------------------------------------------------------- LoRA

ACESTEP_LORA_TARGETS = ("speaker_embedder", "linear_q", "linear_k", "linear_v", "to_q", "to_k", "to_v", "to_out.0")


def add_lora(transformer: nn.Module, adapter_name: str = "lora_adapter", r: int = 8, alpha: int = 16) -> nn.Module:
    """Inject peft LoRA with ACE-Step's target list; afterwards only the LoRA weights train.

    peft matches a target by whole dotted suffix, so "to_q" does not catch "add_q_proj" and
    "to_out.0" does not catch "to_add_out".
    """
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=list(ACESTEP_LORA_TARGETS))
    return inject_adapter_in_model(config, transformer, adapter_name=adapter_name)
