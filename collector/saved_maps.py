"""The latest map of each space, kept beside its run log so a restarted collector serves it at once.

One file per space, ``<store>/<run-dir>/projections/<space>.npz``, loaded with ``allow_pickle=False``:
``keys`` (unicode), ``coords`` (n x 2 float64), ``meta`` and ``quality`` (JSON text), ``step``,
``seconds`` and ``projected_at``. A file is written to ``<space>.npz.tmp`` and renamed over the old
one, so a crash leaves the previous map or the new one, never half of one. ``MapSaver`` writes a
space's map at most once every ``SAVE_EVERY_S`` seconds (and whatever is left on close).
"""
from __future__ import annotations

import json
import logging
import math
import os
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from acestep_viz.collector.errors import CountedErrors

log = logging.getLogger("acestep_viz.collector")
SAVE_EVERY_S = 5.0


@dataclass
class SavedMap:
    keys: list[str]
    coords: np.ndarray  # (n, 2)
    meta: list[dict]
    step: int = -1
    seconds: float = 0.0
    projected_at: float = 0.0
    quality: dict = field(default_factory=dict)
    method: str = "pacmap"  # "pca" for a space too small for PaCMAP


def save_map(path: Path, saved) -> None:
    """Write a map (any object with SavedMap's attributes, e.g. a Projection) atomically."""
    arrays = {"keys": np.array(list(saved.keys), dtype=str).reshape(-1),
              "coords": np.asarray(saved.coords, dtype=np.float64).reshape(-1, 2),
              "meta": np.array(json.dumps(saved.meta, separators=(",", ":"))),
              "quality": np.array(json.dumps(saved.quality, separators=(",", ":"))),
              "step": np.int64(saved.step), "seconds": np.float64(saved.seconds),
              "projected_at": np.float64(saved.projected_at), "method": np.array(str(saved.method))}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_map(path: Path) -> SavedMap:
    """Read a saved map; anything unreadable or inconsistent is a ValueError that says what."""
    try:
        with np.load(path, allow_pickle=False) as data:
            keys = [str(k) for k in data["keys"]]
            coords = np.array(data["coords"], dtype=np.float64)
            meta = json.loads(str(data["meta"]))
            quality = json.loads(str(data["quality"]))
            step, seconds, at = int(data["step"]), float(data["seconds"]), float(data["projected_at"])
            method = str(data["method"]) if "method" in data.files else "pacmap"
    except (OSError, KeyError, EOFError, zipfile.BadZipFile, ValueError) as exc:
        raise ValueError(f"{path}: unreadable ({type(exc).__name__}: {exc})") from None
    if coords.shape != (len(keys), 2) or not np.isfinite(coords).all():
        raise ValueError(f"{path}: coordinates of shape {coords.shape} do not fit {len(keys)} keys")
    if not isinstance(meta, list) or len(meta) != len(keys) or not all(isinstance(m, dict) for m in meta):
        raise ValueError(f"{path}: metadata does not hold one object per key")
    if not isinstance(quality, dict) or not math.isfinite(seconds) or not math.isfinite(at):
        raise ValueError(f"{path}: bad quality or timing fields")
    if method not in ("pacmap", "pca"):
        raise ValueError(f"{path}: unknown projection method {method!r}")
    return SavedMap(keys, coords, meta, step, seconds, at, quality, method)


def save_due(version: int, saved: tuple[int, float] | None, now: float, every_s: float, force: bool) -> bool:
    """Whether a space's current map (``version``) should be written, given the last write
    (version, time) or None."""
    if saved is None:
        return True
    saved_version, saved_at = saved
    return version != saved_version and (force or now - saved_at >= every_s)


class MapSaver:
    """Writes each space's latest map under the store, rate-limited; deletes a cleared space's map.

    ``path_of(run, space)`` names the file. Saving and discarding share one lock, so a map being
    written when its space is cleared is deleted after the write, never left behind."""

    def __init__(self, path_of: Callable[[str, str], Path], every_s: float = SAVE_EVERY_S):
        self.path_of = path_of
        self.every_s = every_s
        self.errors = CountedErrors(log)
        self._saved: dict[tuple[str, str], tuple[int, float]] = {}
        self._lock = threading.Lock()

    def save(self, current: Callable[[], Iterable[tuple[str, str, object]]], now: float,
             force: bool = False) -> int:
        """Write the maps of ``current()`` ((run, space, projection) triples) that are due."""
        written = 0
        with self._lock:
            for run, space, proj in current():
                if not save_due(proj.version, self._saved.get((run, space)), now, self.every_s, force):
                    continue
                try:
                    save_map(self.path_of(run, space), proj)
                except (OSError, ValueError) as exc:
                    self.errors.record(f"cannot save the map of {run}/{space}", exc)
                    previous = self._saved.get((run, space), (-1, now))[0]
                    self._saved[(run, space)] = (previous, now)  # try again in every_s
                    continue
                self._saved[(run, space)] = (proj.version, now)
                written += 1
        return written

    def mark_saved(self, run: str, space: str, version: int, now: float) -> None:
        with self._lock:
            self._saved[(run, space)] = (version, now)

    def discard(self, run: str, spaces: Iterable[str]) -> None:
        """Delete the saved maps of these spaces of ``run`` (the user cleared them)."""
        with self._lock:
            for space in spaces:
                self._saved.pop((run, space), None)
                path = self.path_of(run, space)
                try:
                    path.unlink(missing_ok=True)
                    path.with_name(path.name + ".tmp").unlink(missing_ok=True)
                except OSError as exc:
                    self.errors.record(f"cannot delete the saved map {path}", exc)
