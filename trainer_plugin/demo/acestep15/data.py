"""A preprocessed ACE-Step 1.5 dataset, made in memory from synthetic songs of several genres.

ACE-Step 1.5 trains from ``.pt`` files a preprocessing pass wrote, one per clip: ``target_latents
[T, 64]``, ``attention_mask [T]``, ``encoder_hidden_states [L, 2048]`` with ``encoder_attention_mask
[L]`` (the condition encoder's packed lyrics and caption), ``context_latents [T, 128]`` and
``metadata`` (filename, audio_path, caption, lyrics, genre, bpm...). Here the same tensors are made
without files: latents from per-genre timbres and rhythms, the condition by running the twin's
condition encoder once per clip (``preprocess``), as the real preprocessing does. ``collate`` pads
and stacks them batch first, with ``metadata`` a list of one dict per clip, as 1.5's collate does.
"""
from __future__ import annotations

import os
import zlib

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from ..data import GENRES, Genre
from .model import CONTEXT_DIM, LATENT_DIM

FRAMES_PER_SECOND = 25
TOKEN_DIM = 32


def _rng(*parts: object) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32("/".join(map(str, parts)).encode()))


def _token_features(words: list[str]) -> torch.Tensor:
    """(len(words), TOKEN_DIM): a fixed vector per word, standing in for the text encoder's token states."""
    return torch.from_numpy(np.stack([_rng("token", w).standard_normal(TOKEN_DIM) for w in words]).astype(np.float32))


def song_latents(genre: Genre, key: str, bpm: int, frames: int) -> torch.Tensor:
    """(frames, 64): the genre's timbre plus this clip's offset, pulsing at its tempo."""
    timbre = _rng("timbre", genre.key).standard_normal(LATENT_DIM)
    pulse_direction = _rng("pulse", genre.key).standard_normal(LATENT_DIM)
    clip = _rng("clip", key)
    t = np.arange(frames) / FRAMES_PER_SECOND
    pulse = np.sin(2 * np.pi * bpm / 60 * t)[:, None] * pulse_direction[None] * 0.5
    latents = timbre[None] + 0.3 * clip.standard_normal(LATENT_DIM)[None] + pulse
    return torch.from_numpy((latents + 0.1 * clip.standard_normal((frames, LATENT_DIM))).astype(np.float32))


def song_text(genre: Genre, key: str, bpm: int) -> tuple[str, str]:
    """(caption, lyrics) of one clip."""
    rng = _rng("text", key)
    tags = list(rng.choice(genre.tags, size=3, replace=False))
    caption = f"{genre.name}, {', '.join(tags)}, {bpm} bpm"
    lyrics = " ".join(rng.choice(genre.lyric_words, size=8))
    return caption, lyrics


@torch.no_grad()
def preprocess(encoder: nn.Module, genre: Genre, index: int, audio_dir: str | None = None) -> dict:
    """One clip's preprocessed tensors and metadata; the condition encoder runs here, not in training.
    ``audio_dir``: where the clip's source audio file is (``metadata["audio_path"]``)."""
    key = f"{genre.key}-{index:02d}"
    rng = _rng("shape", key)
    bpm = int(rng.integers(genre.bpm[0], genre.bpm[1] + 1))
    frames = int(rng.integers(2 * FRAMES_PER_SECOND, 3 * FRAMES_PER_SECOND + 1))
    caption, lyrics = song_text(genre, key, bpm)
    text = _token_features(caption.replace(",", " ").split())[None]
    lyric = _token_features(lyrics.split())[None]
    condition, condition_mask = encoder(text, torch.ones(text.shape[:2]), lyric, torch.ones(lyric.shape[:2]))
    context = torch.cat([torch.zeros(frames, CONTEXT_DIM // 2), torch.ones(frames, CONTEXT_DIM // 2)], dim=-1)
    return {
        "target_latents": song_latents(genre, key, bpm, frames),
        "attention_mask": torch.ones(frames),
        "encoder_hidden_states": condition[0].float(),
        "encoder_attention_mask": condition_mask[0].float(),
        "context_latents": context,
        "metadata": {"filename": f"{key}.wav", "caption": caption,
                     "audio_path": os.path.abspath(os.path.join(audio_dir or f"/data/{genre.key}", f"{key}.wav")),
                     "lyrics": lyrics, "genre": genre.name, "bpm": bpm, "keyscale": "C major",
                     "duration": frames / FRAMES_PER_SECOND},
    }


class PreprocessedSongs(Dataset):
    """``clips_per_genre`` preprocessed clips of every genre (or of ``genres``), in memory."""

    def __init__(self, encoder: nn.Module, clips_per_genre: int = 5, genres: tuple[Genre, ...] = GENRES,
                 first_index: int = 0, audio_dir: str | None = None):
        self.samples = [preprocess(encoder, genre, first_index + i, audio_dir) for i in range(clips_per_genre)
                        for genre in genres]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        return self.samples[index]


def collate(samples: list[dict]) -> dict:
    """Pad every tensor to the batch's longest (zeros: masks are 0 on padding) and stack batch first."""
    batch = {}
    for name in ("target_latents", "attention_mask", "context_latents", "encoder_hidden_states",
                 "encoder_attention_mask"):
        tensors = [sample[name] for sample in samples]
        longest = max(t.shape[0] for t in tensors)
        batch[name] = torch.stack([torch.cat([t, t.new_zeros(longest - t.shape[0], *t.shape[1:])]) for t in tensors])
    batch["metadata"] = [sample["metadata"] for sample in samples]
    return batch
