"""The demo twins' synthetic songs as WAV files, so the dashboard can play a selected demo clip.

``acestep-viz demo --audio-dir DIR`` (and ``up --demo``, with ``<store>/demo-audio``) writes them. The
v1 twin's files hold the very waveforms it trains on, named ``<key>.wav`` as ACE-Step v1 datasets name
``<key>.mp3``: the dashboard finds them by clip key. The 1.5 twin trains from latents made without
audio; its files are rendered from the same genre tones, and its clips' ``metadata["audio_path"]``
names them, as 1.5's preprocessing records the source file.
"""
from __future__ import annotations

import os
import wave
import zlib

import numpy as np

from .data import GENRES, SyntheticSongs, render

SAMPLE_RATE_15 = 8000


def write_wav(path: str, stereo: np.ndarray, sample_rate: int) -> None:
    """A (2, samples) float waveform in [-1, 1] as a 16-bit stereo WAV file."""
    frames = (np.clip(np.asarray(stereo, dtype=np.float32), -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(path, "wb") as out:
        out.setnchannels(frames.shape[0])
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(np.ascontiguousarray(frames.T).tobytes())


def write_v1_audio(directory: str, n_clips: int = 48, sample_rate: int = 4000, seed: int = 0) -> list[str]:
    """The v1 twin's clips (the dataset it trains on, same seed) as ``<directory>/<key>.wav``."""
    os.makedirs(directory, exist_ok=True)
    songs, paths = SyntheticSongs(n_clips=n_clips, sample_rate=sample_rate, seed=seed), []
    for clip in range(n_clips):
        item = songs[clip]
        path = os.path.join(directory, f"{item['key']}.wav")
        write_wav(path, item["wav"].numpy(), sample_rate)
        paths.append(path)
    return paths


def write_15_audio(metadata: list[dict]) -> list[str]:
    """A file at each 1.5 clip's ``audio_path``: its genre's tones, as long as the clip."""
    by_name = {genre.name: genre for genre in GENRES}
    paths = []
    for meta in metadata:
        path, genre = meta["audio_path"], by_name[meta["genre"]]
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        rng = np.random.default_rng(zlib.crc32(f"audio/{meta['filename']}".encode()))
        write_wav(path, render(genre, rng, SAMPLE_RATE_15, float(meta["duration"])), SAMPLE_RATE_15)
        paths.append(path)
    return paths
