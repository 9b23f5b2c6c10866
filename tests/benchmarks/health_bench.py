"""What the health figures add to each fit: collector/health.py's ``frame_health`` on one space of 3,000
rows x 2,560 dimensions (the default --max-fit-points), per space, median of ``--repeats`` frames.

- health_ms_per_fit_{latent,lora,prompt}: effective rank, tag silhouettes (8 tags) and, for the LoRA
  space, CKA to the first frame (1,000 clips x 3 layers);
- health_ms_per_round_3x3k: the three together, what one round of fits of all spaces gains;
- neighbour_overlap_ms_3k: the existing quality figure on the same rows, for scale.

    python tests/benchmarks/health_bench.py [--repeats 5]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
from acestep_viz.collector.health import frame_health
from acestep_viz.collector.quality import latest_by_key, neighbour_overlap
from common import record

ROWS, DIM, CLIPS = 3000, 2560, 1000
GENRES = ("metal", "jazz", "ambient", "techno", "folk", "hip hop")
EXTRAS = ("live recording", "lo-fi production", "energetic", "melodic", "instrumental")


def space_rows(rng, space: str) -> tuple[np.ndarray, list[dict]]:
    vectors = rng.normal(size=(ROWS, DIM)).astype(np.float16).astype(np.float32)
    meta = [{"id": f"clip{i % CLIPS}", "layer": f"blocks.{i // CLIPS}.attn.to_out.0" if space == "lora" else None,
             "prompt": f"{GENRES[i % len(GENRES)]}, {EXTRAS[(i // 7) % len(EXTRAS)]}, {90 + i % 40} bpm"}
            for i in range(ROWS)]
    return vectors, meta


def timed_ms(work) -> float:
    started = time.perf_counter()
    work()
    return (time.perf_counter() - started) * 1000


def main(repeats: int = 5) -> dict:
    rng = np.random.default_rng(0)
    results, per_round = {}, []
    rows = {space: space_rows(rng, space) for space in ("latent", "lora", "prompt")}
    first = latest_by_key(*rows["lora"])
    for space, (vectors, meta) in rows.items():
        current = latest_by_key(vectors + 0.1, meta) if space == "lora" else None
        def work(space=space, vectors=vectors, meta=meta, current=current):
            frame_health(space, vectors, meta, first if current else None, current)
        times = [timed_ms(work) for _ in range(repeats)]
        results[f"health_ms_per_fit_{space}"] = round(statistics.median(times), 1)
        per_round.append(statistics.median(times))
    results["health_ms_per_round_3x3k"] = round(sum(per_round), 1)
    layout = rng.normal(size=(ROWS, 2))
    vectors = rows["latent"][0]
    results["neighbour_overlap_ms_3k"] = round(statistics.median(
        timed_ms(lambda: neighbour_overlap(vectors, layout)) for _ in range(repeats)), 1)
    print(json.dumps(results), flush=True)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    record(main(parser.parse_args().repeats))
