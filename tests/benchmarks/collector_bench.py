"""Collector benchmarks: freshness, fit time, layout stability, memory.

- freshness_p95_s_{1k,10k}: 3 spaces pre-filled with N points each, then new rows stream in;
  for each new row, the time from its capture (`sent_at`) until a snapshot contains it.
- projection_s_1k: one full PaCMAP fit of 1000 x 2560 from scratch (no previous map), median of 5 fits
  after one that compiles the kernels; projection_s_1k_in_collector: the collector's newest full fit of a
  1000-point space during the freshness run (a refit that starts from the current map).
- stability_median_disp_pct: between consecutive frames where <= 10 % of the points are new,
  the median move of the old points as % of the layout's diameter, under the collector's policy
  (new rows placed on the map, a full fit once more than --refit-new-share of it is new or gone);
  `..._full_refit`: the same move across the full fits only (warm-started and aligned);
  `..._unaligned`: fresh fits of the same frames without warm start or alignment.
- neighbour_overlap_1k: neighbour overlap (collector/quality.py) of the first, cold fit of those 1000
  points; neighbour_overlap_full_refit: its median over the full refits.
- collector_rss_mb_10k: resident memory of the collector process holding 3 x 10k x 2560 float16
  (its PaCMAP worker process reported separately).

    python tests/benchmarks/collector_bench.py [--quick | --stability]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import psutil
from acestep_viz.collector.placement import RefitPolicy, extend_layout, full_fit_reason, map_change
from acestep_viz.collector.projection import align_to_previous, fit_layout, layout_diameter, warm_start
from acestep_viz.collector.projector import limit_blas_threads
from acestep_viz.collector.quality import neighbour_overlap
from common import query, quiet_collector, record
from support import send_frames, wait_for

from acestep_viz.wire import Frame

DIM = 2560
SPACES = ("latent", "lora", "prompt")


def clustered(rng, n, dim=DIM, centres=8):
    middle = rng.normal(0, 3, size=(centres, dim))
    return (middle[rng.integers(0, centres, n)] + rng.normal(size=(n, dim))).astype(np.float16)


def cold_fit_s(n: int = 1000, repeats: int = 5) -> tuple[float, float]:
    """(median seconds, median neighbour overlap) of full fits of ``n`` clustered rows with no previous map."""
    rng = np.random.default_rng(7)
    fit_layout(clustered(rng, 200), 10)  # compiles the kernels, as the collector's worker does at start-up
    limit_blas_threads()  # as the worker does then
    seconds, overlaps = [], []
    for _ in range(repeats):
        data = clustered(rng, n)
        started = time.perf_counter()
        coords = fit_layout(data, 10)
        seconds.append(time.perf_counter() - started)
        overlaps.append(neighbour_overlap(data, coords))
    print(f"cold fits of {n} x {DIM}: {[round(x, 3) for x in seconds]} s", flush=True)
    return statistics.median(seconds), statistics.median(overlaps)


def frames_for(run, space, ids, vectors, step, sent_at):
    meta = [{"layer": "blocks.0.attn.to_out.0"} if space == "lora" else {"prompt": f"p {i}"} for i in ids]
    return Frame(run=run, space=space, step=step, ids=list(ids), vectors=vectors, meta=meta, sent_at=sent_at)


def prefill(collector, run, n, rng, cap):
    frames = []
    for space in SPACES:
        for start in range(0, n, 500):
            ids = [f"{space}-clip{i}" for i in range(start, min(n, start + 500))]
            frames.append(frames_for(run, space, ids, clustered(rng, len(ids)), 0, time.time()))
    send_frames(collector.ingest, frames)

    def all_projected():
        snap = query(collector.query, {"op": "snapshot", "run": run, "since": None})
        return snap if all(snap["spaces"][s]["projected"] >= min(n, cap) for s in SPACES) else None
    return wait_for(all_projected, timeout=900, interval=0.5)


def freshness(n: int, duration_s: float, rate_hz: float = 2.0) -> tuple[float, float]:
    rng = np.random.default_rng(1)
    run = f"fresh-{n}"
    cap = max(3000, n // 3)
    extra = ["--buffer-size", str(n + 2000), "--max-fit-points", str(cap), "--projection-interval-s", "0"]
    with quiet_collector(extra) as collector:
        collector.wait_ready()
        prefill(collector, run, n, rng, cap)
        fit_s = last_full_fit_s(collector, run)
        sent, seen, lags = {}, set(), []
        deadline = time.time() + duration_s
        step = 1
        import zmq

        from acestep_viz.wire import encode
        pub = zmq.Context.instance().socket(zmq.XPUB)
        pub.setsockopt(zmq.LINGER, 1000)
        pub.connect(collector.ingest)
        pub.poll(10000)
        pub.recv()
        next_send = time.time()
        version = None
        while time.time() < deadline or len(seen) < len(sent):
            now = time.time()
            if now >= next_send and now < deadline:
                for space in SPACES:  # one new row per space, as a training step would add
                    key = f"{space}-new{step}"
                    pub.send_multipart(encode(frames_for(run, space, [key], clustered(rng, 1), step, now)))
                    sent[(space, key)] = now
                step += 1
                next_send += 1.0 / rate_hz
            snap = query(collector.query, {"op": "snapshot", "run": run, "since": version})  # as the dashboard polls
            stamp = time.time()
            version = snap["version"]
            for space in SPACES if snap["changed"] else ():
                for key in snap["spaces"][space]["points"]["id"]:
                    if (space, key) in sent and (space, key) not in seen:
                        seen.add((space, key))
                        lags.append(stamp - sent[(space, key)])
            if time.time() > deadline + 120:
                break
            time.sleep(0.05)
        pub.close()
    lags.sort()
    p95 = lags[int(0.95 * (len(lags) - 1))] if lags else float("nan")
    print(f"freshness n={n}: {len(lags)}/{len(sent)} new rows seen, p50 {statistics.median(lags):.2f} s, "
          f"p95 {p95:.2f} s; one fit of {n} points {fit_s:.2f} s", flush=True)
    return p95, fit_s


def last_full_fit_s(collector, run: str) -> float:
    """Seconds of the newest full PaCMAP fit of the run's LoRA space (placements are not fits)."""
    frames = query(collector.query, {"op": "history", "run": run, "space": "lora"})["frames"]
    return [f["seconds"] for f in frames if f.get("fit", "full") == "full"][-1]


def stability(n: int = 1000, frames: int = 13, new_share: float = 0.1) -> dict:
    """Median old-point displacement between consecutive frames (all frames under the collector's
    policy, full refits only, fresh unaligned fits), how many of the frames were full refits, and the
    neighbour overlap of the first fit and of the full refits."""
    rng = np.random.default_rng(2)
    policy = RefitPolicy()
    data = clustered(rng, n).astype(np.float32)
    keys = [f"k{i}" for i in range(n)]
    prev_keys, prev, prev_raw, full_keys = None, None, None, frozenset()
    moves, moves_full, moves_raw, overlaps_full = [], [], [], []
    first_overlap = None
    for _ in range(frames):
        if prev_keys is not None:  # replace 10 % of the rows by new ones
            drop = rng.choice(n, size=int(new_share * n), replace=False)
            data[drop] = clustered(rng, len(drop)).astype(np.float32)
            for i in drop:
                keys[i] = f"k{rng.integers(1 << 40)}"
        change = map_change(full_keys, keys) if full_keys else None
        if full_fit_reason(change, 0.0, policy) is None:
            now = extend_layout(prev_keys, prev, keys, data)[0]
        else:
            start = warm_start(prev_keys, prev, keys, data) if prev_keys else None
            init, held = start if start is not None else (None, None)
            now = fit_layout(data, 10, init, held)
            now = align_to_previous(prev_keys, prev, keys, now) if prev_keys else now
            full_keys = frozenset(keys)
            if prev_keys is not None:
                moves_full.append(_median_move(prev_keys, prev, keys, now))
                overlaps_full.append(neighbour_overlap(data, now))
            else:
                first_overlap = neighbour_overlap(data, now)
        if prev_keys is not None:
            moves.append(_median_move(prev_keys, prev, keys, now))
            raw = fit_layout(data, 10)
            moves_raw.append(_median_move(prev_keys, prev_raw, keys, raw))
        else:
            raw = now
        prev_keys, prev, prev_raw = list(keys), now, raw
    print(f"stability: moves per frame {[round(m, 2) for m in moves]}; full refits {len(moves_full)} "
          f"{[round(m, 2) for m in moves_full]}", flush=True)
    return dict(stability_median_disp_pct=round(statistics.median(moves), 2),
                stability_median_disp_pct_full_refit=round(statistics.median(moves_full), 2),
                stability_median_disp_pct_unaligned=round(statistics.median(moves_raw), 2),
                stability_full_refits=len(moves_full), neighbour_overlap_1k=round(first_overlap, 3),
                neighbour_overlap_full_refit=round(statistics.median(overlaps_full), 3))


def _median_move(prev_keys, prev, keys, now) -> float:
    index = {k: i for i, k in enumerate(prev_keys)}
    pairs = [(index[k], i) for i, k in enumerate(keys) if k in index]
    before = prev[[p for p, _ in pairs]]
    after = now[[i for _, i in pairs]]
    return float(np.median(np.linalg.norm(after - before, axis=1)) / layout_diameter(prev) * 100)


def memory_10k() -> tuple[float, float]:
    rng = np.random.default_rng(3)
    with quiet_collector(["--buffer-size", "10000"]) as collector:
        collector.wait_ready()
        query(collector.query, {"op": "pause"})
        frames = []
        for space in SPACES:
            for start in range(0, 10000, 500):
                ids = [f"{space}-{i}" for i in range(start, start + 500)]
                meta_space = space
                frames.append(frames_for("rss", meta_space, ids, clustered(rng, 500), start, time.time()))
        send_frames(collector.ingest, frames)
        wait_for(lambda: all(query(collector.query, {"op": "stats"})["runs"].get("rss", {}).get(s, {})
                             .get("buffered", 0) >= 10000 for s in SPACES), timeout=300)
        proc = psutil.Process(collector.pid)
        worker = [c for c in proc.children() if "projector" in " ".join(c.cmdline())]
        return proc.memory_info().rss / 2**20, (worker[0].memory_info().rss / 2**20 if worker else float("nan"))


def main(quick: bool = False) -> dict:
    results = {}
    p95, fit = freshness(1000, duration_s=20 if quick else 40)
    cold_s, cold_overlap = cold_fit_s()
    results.update(freshness_p95_s_1k=round(p95, 2), projection_s_1k_in_collector=round(fit, 3),
                   projection_s_1k=round(cold_s, 3), neighbour_overlap_1k_cold=round(cold_overlap, 3))
    if not quick:
        p95_10k, fit_10k = freshness(10000, duration_s=30)
        results.update(freshness_p95_s_10k=round(p95_10k, 2), projection_s_10k_capped=round(fit_10k, 3))
    results.update(stability())
    rss, worker_rss = memory_10k()
    results.update(collector_rss_mb_10k=round(rss, 1), projector_rss_mb=round(worker_rss, 1))
    print(json.dumps(results), flush=True)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1k freshness only, shorter")
    parser.add_argument("--stability", action="store_true",
                        help="layout stability and neighbour overlap only (in process, no collector)")
    args = parser.parse_args()
    record(stability() if args.stability else main(args.quick))
