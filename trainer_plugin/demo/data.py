"""Synthetic "songs" from six genres, each with its own sound and prompt vocabulary.

Clips are short stereo waveforms at a low sample rate, rendered on demand from a per-clip seed,
so the dataset is cheap and needs no files. Batches carry the keys ACE-Step's Text2MusicDataset
collates: keys, target_wavs, wav_lengths, prompts, lyric_token_ids, lyric_masks, speaker_embs.
Prompts behave like ACE-Step's: each clip has fixed tags and recaptions, and every visit shuffles
the tags and picks at random among the recaptions and the shuffled tags, so the same clip comes
back with different prompt texts; the dataset repeats each clip ``repeat_count`` times under the
same key, as ``convert2hf_dataset.py`` does. The audio of a clip never changes.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset


@dataclass(frozen=True)
class Genre:
    key: str  # clip id prefix
    name: str
    chord_hz: tuple[float, ...]  # pitched content
    harmonics: int
    drive: float  # tanh distortion gain; 1 is clean
    bpm: tuple[int, int]
    kick_hz: float  # 0: no kick
    hat: float  # level of noise bursts on off-beats
    noise_colour: float  # 0 white, 1 pink, 2 brown
    noise_level: float
    pluck_decay: float  # per-beat amplitude decay rate; 0 = sustained pad
    tags: tuple[str, ...]
    lyric_words: tuple[str, ...]


GENRES = (
    Genre("lofi", "lo-fi hip hop", (110.0, 138.6, 164.8, 207.7), 3, 1.0, (70, 90), 60.0, 0.15, 1.0, 0.08, 3.0,
          ("chill", "dusty drums", "vinyl crackle", "mellow piano", "jazzy chords", "relaxed"),
          ("rain", "window", "coffee", "late", "night", "slow", "city", "dream")),
    Genre("metal", "heavy metal", (82.4, 123.5, 164.8), 6, 8.0, (150, 190), 55.0, 0.5, 0.0, 0.15, 1.0,
          ("distorted guitar", "fast drums", "aggressive", "double bass", "shredding", "dark"),
          ("fire", "steel", "scream", "thunder", "burn", "blood", "iron", "storm")),
    Genre("ambient", "ambient", (220.0, 277.2, 329.6, 440.0), 1, 1.0, (50, 70), 0.0, 0.0, 2.0, 0.05, 0.0,
          ("atmospheric", "pads", "drone", "ethereal", "slow evolving", "calm"),
          ("ocean", "light", "drift", "breathe", "space", "still", "glow", "float")),
    Genre("jazz", "jazz", (146.8, 185.0, 220.0, 261.6), 4, 1.2, (100, 140), 0.0, 0.3, 1.0, 0.04, 2.0,
          ("swing", "upright bass", "saxophone", "brushed drums", "walking bass", "improvised"),
          ("blue", "moon", "smoke", "baby", "midnight", "street", "love", "train")),
    Genre("techno", "techno", (55.0, 110.0, 880.0), 5, 2.0, (125, 140), 50.0, 0.6, 0.0, 0.03, 6.0,
          ("four on the floor", "synth bass", "hypnotic", "warehouse", "driving", "analog synth"),
          ("machine", "pulse", "body", "move", "repeat", "signal", "dark", "floor")),
    Genre("folk", "folk", (196.0, 246.9, 293.7, 392.0), 3, 1.0, (85, 115), 0.0, 0.0, 1.0, 0.01, 4.0,
          ("acoustic guitar", "fingerpicking", "warm vocals", "harmonica", "storytelling", "gentle"),
          ("river", "home", "road", "mountain", "mother", "field", "wind", "old")),
)
SHARED_TAGS = ("instrumental", "energetic", "melodic", "lo-fi production", "live recording")
LYRIC_VOCAB_SIZE = 256
SPEAKER_DIM = 512


def coloured_noise(rng: np.random.Generator, n: int, colour: float) -> np.ndarray:
    """Noise with a 1/f**colour power spectrum, unit peak."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.maximum(np.fft.rfftfreq(n), 1.0 / n)
    noise = np.fft.irfft(spectrum / freqs ** (colour / 2), n)
    return noise / (np.abs(noise).max() + 1e-9)


def render(genre: Genre, rng: np.random.Generator, sample_rate: int, seconds: float) -> np.ndarray:
    """One stereo clip, shape (2, samples), float32 in [-1, 1]."""
    n = int(seconds * sample_rate)
    t = np.arange(n) / sample_rate
    beat = 60.0 / rng.uniform(*genre.bpm)
    phase = (t % beat) / beat  # position inside the current beat
    transpose = 2 ** (rng.integers(-2, 3) / 12)

    tone = sum(np.sin(2 * np.pi * f * transpose * h * t + rng.uniform(0, 2 * np.pi)) / h
               for f in genre.chord_hz for h in range(1, genre.harmonics + 1))
    tone = np.tanh(genre.drive * tone / len(genre.chord_hz)) / np.tanh(genre.drive)
    if genre.pluck_decay:
        tone *= np.exp(-genre.pluck_decay * phase)
    else:  # a slow swell instead of a rhythm
        tone *= 0.6 + 0.4 * np.sin(2 * np.pi * t / rng.uniform(1.5, 3.0))

    signal = 0.5 * tone
    if genre.kick_hz:
        pitch_drop = 1 + 2 * np.exp(-30 * phase * beat)
        signal += 0.6 * np.sin(2 * np.pi * genre.kick_hz * t * pitch_drop) * np.exp(-8 * phase)
    if genre.hat:
        off_beat = ((phase > 0.5) & (phase < 0.6)).astype(float)
        signal += genre.hat * 0.3 * off_beat * coloured_noise(rng, n, 0.0)

    stereo = np.stack([signal, signal])
    stereo += genre.noise_level * np.stack([coloured_noise(rng, n, genre.noise_colour) for _ in range(2)])
    stereo *= rng.uniform(0.5, 0.9) / (np.abs(stereo).max() + 1e-9)
    return stereo.astype(np.float32)


def lyric_tokens(words: list[str]) -> list[int]:
    return [1 + zlib.crc32(w.encode()) % (LYRIC_VOCAB_SIZE - 1) for w in words]


class SyntheticSongs(Dataset):
    """`n_clips` clips cycling through the genres, each `repeat_count` times; a clip's audio is the same on
    every visit, its prompt text is drawn anew (from a generator seeded by `seed`: reproducible per run)."""

    def __init__(self, n_clips: int = 48, sample_rate: int = 4000, min_seconds: float = 1.0,
                 max_seconds: float = 3.0, seed: int = 0, repeat_count: int = 1):
        self.n_clips = n_clips
        self.repeat_count = repeat_count
        self.sample_rate = sample_rate
        self.min_seconds = min_seconds
        self.max_seconds = max_seconds
        self.seed = seed
        self._visits = np.random.default_rng([seed, 1 << 20])  # prompt draws, one per visit

    def __len__(self) -> int:
        return self.n_clips * self.repeat_count

    def genre_of(self, index: int) -> Genre:
        return GENRES[index % self.n_clips % len(GENRES)]

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(index)
        clip = index % self.n_clips
        genre = self.genre_of(clip)
        rng = np.random.default_rng([self.seed, clip])
        seconds = rng.uniform(self.min_seconds, self.max_seconds)
        wav = render(genre, rng, self.sample_rate, seconds)
        tags = [genre.name, *rng.choice(genre.tags, size=3, replace=False), str(rng.choice(SHARED_TAGS))]
        bpm = int(rng.integers(*genre.bpm))
        tags.append(f"{bpm} bpm")
        words = list(rng.choice(genre.lyric_words, size=int(rng.integers(8, 33))))
        speaker = rng.standard_normal(SPEAKER_DIM) * 0.5
        speaker[GENRES.index(genre) :: len(GENRES)] += 1.0  # a genre-flavoured "voice"
        return {
            "key": f"{genre.key}_{clip // len(GENRES):02d}",
            "prompt": visit_prompt(tags, recaptions(genre, tags), self._visits),
            "wav": torch.from_numpy(wav),
            "lyric_token_ids": torch.tensor(lyric_tokens(words), dtype=torch.long),
            "speaker_emb": torch.from_numpy(speaker.astype(np.float32)),
        }


def recaptions(genre: Genre, tags: list[str]) -> list[str]:
    """A clip's rewritten captions, in the spirit of the ``recaption`` field of ACE-Step's datasets."""
    return [f"a {genre.name} track with {tags[1]} and {tags[2]}", f"{tags[3]} {genre.name} at {tags[-1]}"]


def visit_prompt(tags: list[str], captions: list[str], rng: np.random.Generator) -> str:
    """One visit's prompt text, drawn as Text2MusicDataset.process draws it: the tags shuffled and joined
    with ", ", then one of the recaptions or that joined text, chosen at random."""
    shuffled = [tags[i] for i in rng.permutation(len(tags))]
    choices = [*captions, ", ".join(shuffled)]
    return choices[int(rng.integers(len(choices)))]


def collate(items: list[dict]) -> dict:
    """Pad waveforms and lyrics to the batch maximum; the keys are those of ACE-Step's batches."""
    wav_lengths = torch.tensor([it["wav"].shape[-1] for it in items], dtype=torch.long)
    lyric_lengths = [len(it["lyric_token_ids"]) for it in items]
    wavs = torch.zeros(len(items), 2, int(wav_lengths.max()))
    lyrics = torch.zeros(len(items), max(lyric_lengths), dtype=torch.long)
    lyric_masks = torch.zeros_like(lyrics)
    for i, it in enumerate(items):
        wavs[i, :, : wav_lengths[i]] = it["wav"]
        lyrics[i, : lyric_lengths[i]] = it["lyric_token_ids"]
        lyric_masks[i, : lyric_lengths[i]] = 1
    return {
        "keys": [it["key"] for it in items],
        "target_wavs": wavs,
        "wav_lengths": wav_lengths,
        "prompts": [it["prompt"] for it in items],
        "lyric_token_ids": lyrics,
        "lyric_masks": lyric_masks,
        "speaker_embs": torch.stack([it["speaker_emb"] for it in items]),
    }
