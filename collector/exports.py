"""Writing a run's spaces to files other tools open: NPZ (numpy), TensorBoard's projector and an
animated GIF of the map history (collector/animation.py).

Each space is a matrix of vectors, the 2-D map coordinates of the rows that were projected
(NaN for the others) and per-row metadata. No pickle: text columns are fixed-width unicode arrays.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

META_COLUMNS = ("id", "step", "micro_batch", "rank", "layer", "loss", "timestep", "prompt")


@dataclass
class SpaceExport:
    space: str
    vectors: np.ndarray  # (n, dim) float16
    coords: np.ndarray  # (n, 2) float32, NaN where a row was not in the latest map
    meta: list[dict]


def write_npz(path: Path, spaces: list[SpaceExport]) -> Path:
    """One compressed .npz: `<space>_vectors`, `<space>_coords` and `<space>_<column>` per space."""
    arrays = {}
    for s in spaces:
        arrays[f"{s.space}_vectors"] = s.vectors
        arrays[f"{s.space}_coords"] = s.coords.astype(np.float32)
        for column in META_COLUMNS:
            values = [m.get(column) for m in s.meta]
            if column in ("step", "micro_batch", "rank"):
                arrays[f"{s.space}_{column}"] = np.array([-1 if v is None else v for v in values], dtype=np.int64)
            elif column in ("loss", "timestep"):
                arrays[f"{s.space}_{column}"] = np.array([np.nan if v is None else v for v in values], np.float64)
            else:
                arrays[f"{s.space}_{column}"] = np.array(["" if v is None else str(v) for v in values], dtype=str)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path


def write_tensorboard(directory: Path, spaces: list[SpaceExport]) -> list[Path]:
    """`projector_config.pbtxt` plus `<space>/tensors.tsv` and `<space>/metadata.tsv`:
    `tensorboard --logdir DIRECTORY` shows each space in the Projector tab."""
    written, config = [], []
    for s in spaces:
        folder = directory / s.space
        folder.mkdir(parents=True, exist_ok=True)
        tensors = folder / "tensors.tsv"
        np.savetxt(tensors, s.vectors.astype(np.float32), delimiter="\t", fmt="%.5g")
        metadata = folder / "metadata.tsv"
        metadata.write_text(_metadata_tsv(s.meta), encoding="utf-8")
        written += [tensors, metadata]
        config.append(f'embeddings {{\n  tensor_name: "{s.space}"\n  tensor_path: "{s.space}/tensors.tsv"\n'
                      f'  metadata_path: "{s.space}/metadata.tsv"\n}}\n')
    pbtxt = directory / "projector_config.pbtxt"
    pbtxt.write_text("".join(config), encoding="utf-8")
    return [pbtxt, *written]


def write_gif(path: Path, history: dict[str, list]) -> tuple[Path, int]:
    """The frame history ({space: frames, oldest first}) as an animated GIF; returns the path and
    the number of pictures (one per training step). ValueError when nothing was projected."""
    from acestep_viz.collector.animation import render_gif

    data, steps = render_gif(history), len({f.step for frames in history.values() for f in frames})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path, steps


def _metadata_tsv(meta: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, delimiter="\t", lineterminator="\n")
    writer.writerow(META_COLUMNS)
    for m in meta:
        writer.writerow(["" if m.get(c) is None else _one_line(m.get(c)) for c in META_COLUMNS])
    return out.getvalue()


def _one_line(value) -> str:
    return str(value).replace("\t", " ").replace("\n", " ").replace("\r", " ")
