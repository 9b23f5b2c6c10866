"""The collector as a real process: frames in over ZeroMQ, projections and control out."""
import time

import pytest
from support import CollectorProcess, query, send_frames, synthetic_frames, wait_for

from acestep_viz.point_columns import decode_points

pytestmark = pytest.mark.slow
SPACES = ("latent", "lora", "prompt")


def all_projected(endpoint, minimum=10):
    snap = query(endpoint, {"op": "snapshot", "since": None})
    if snap["run"] and all(snap["spaces"][s]["projected"] >= minimum for s in SPACES):
        return snap
    return None


@pytest.fixture
def collector(tmp_path):
    with CollectorProcess(tmp_path / "store") as proc:
        proc.wait_ready()
        yield proc


def test_frames_become_projected_points_with_metadata(collector):
    send_frames(collector.ingest, synthetic_frames(run="run-1", n_clips=30, steps=2))
    snap = wait_for(lambda: all_projected(collector.query), timeout=60)
    latent = snap["spaces"]["latent"]["points"]
    assert len(latent["x"]) == 30 and len(set(latent["id"])) == 30
    lora = snap["spaces"]["lora"]["points"]
    assert len(lora["x"]) == 30 * 2 * 3 and set(lora["layer"]) == {f"block{i}.to_out.0" for i in range(3)}
    assert all(p.startswith(("metal", "jazz", "ambient", "techno", "folk")) for p in lora["prompt"])
    unchanged = query(collector.query, {"op": "snapshot", "since": snap["version"]})
    assert unchanged["changed"] is False and "spaces" not in unchanged


def test_bad_frames_are_counted_by_reason_and_good_ones_still_accepted(collector):
    import zmq
    frames = synthetic_frames(run="run-2", n_clips=12, steps=1)
    ctx = zmq.Context.instance()
    pub = ctx.socket(zmq.XPUB)
    pub.setsockopt(zmq.LINGER, 2000)
    pub.connect(collector.ingest)
    assert pub.poll(10000)
    pub.recv()
    pub.send_multipart([b"garbage"])
    pub.send_multipart([b"run-2/lora", b"{nope", b"\0\0"])
    pub.close()
    send_frames(collector.ingest, frames)
    stats = wait_for(lambda: (lambda s: s if s["frames_accepted"] >= len(frames) else None)(
        query(collector.query, {"op": "stats"})), timeout=20)
    assert stats["rejects"] == {"part_count": 1, "json": 1}
    assert stats["runs"]["run-2"]["latent"]["buffered"] == 12


def test_clear_pause_and_refit_over_the_query_api(collector):
    send_frames(collector.ingest, synthetic_frames(run="run-3", n_clips=20, steps=1))
    wait_for(lambda: all_projected(collector.query), timeout=60)
    assert query(collector.query, {"op": "pause"})["ok"]
    send_frames(collector.ingest, synthetic_frames(run="run-3", n_clips=25, steps=2, seed=1))
    before = query(collector.query, {"op": "stats"})["runs"]["run-3"]["lora"]
    wait_for(lambda: query(collector.query, {"op": "stats"})["runs"]["run-3"]["lora"]["buffered"] > before["projected"])
    assert query(collector.query, {"op": "stats"})["runs"]["run-3"]["lora"]["version"] == before["version"]
    query(collector.query, {"op": "resume"})
    wait_for(lambda: query(collector.query, {"op": "stats"})["runs"]["run-3"]["lora"]["version"] > before["version"],
             timeout=30)
    version = query(collector.query, {"op": "stats"})["runs"]["run-3"]["prompt"]["version"]
    query(collector.query, {"op": "refit", "space": "prompt"})
    wait_for(lambda: query(collector.query, {"op": "stats"})["runs"]["run-3"]["prompt"]["version"] > version,
             timeout=30)
    assert query(collector.query, {"op": "clear"})["ok"]
    snap = query(collector.query, {"op": "snapshot", "since": None})
    assert snap["run"] is None and all(snap["spaces"][s]["projected"] == 0 for s in SPACES)
    assert snap["cleared"] is True
    send_frames(collector.ingest, synthetic_frames(run="run-4", n_clips=5, steps=1))
    wait_for(lambda: query(collector.query, {"op": "snapshot", "since": None})["cleared"] is False)


def test_unknown_ops_and_bad_requests_get_errors_not_crashes(collector):
    assert query(collector.query, {"op": "explode"})["ok"] is False
    assert "since" in query(collector.query, {"op": "snapshot", "since": "x"})["error"]
    assert query(collector.query, {"op": "clear", "space": "video"})["ok"] is False
    assert query(collector.query, {"op": "ping"})["ok"] is True


def test_restart_restores_buffers_from_the_store(tmp_path):
    store = tmp_path / "store"
    frames = synthetic_frames(run="run-4", n_clips=15, steps=2)
    with CollectorProcess(store) as first:
        send_frames(first.ingest, frames)
        wait_for(lambda: query(first.query, {"op": "stats"})["frames_accepted"] == len(frames), timeout=20)
        time.sleep(1.5)  # the promise: what was accepted more than ~1 s before a kill -9 survives it
        first.kill9()
    with CollectorProcess(store) as second:
        runs = query(second.query, {"op": "stats"})["runs"]
        assert {s: runs["run-4"][s]["buffered"] for s in SPACES} == {"latent": 15, "lora": 90, "prompt": 15}


def test_history_quality_and_runtime_settings(collector):
    send_frames(collector.ingest, synthetic_frames(run="run-5", n_clips=20, steps=1))
    wait_for(lambda: all_projected(collector.query), timeout=60)
    send_frames(collector.ingest, synthetic_frames(run="run-5", n_clips=20, steps=3, seed=3))
    history = wait_for(lambda: (lambda h: h if len(h["frames"]) >= 2 else None)(
        query(collector.query, {"op": "history", "run": "run-5", "space": "lora"})), timeout=30)
    versions = [f["version"] for f in history["frames"]]
    assert versions == sorted(versions) and history["frames"][-1]["step"] == 2
    latest = history["frames"][-1]
    assert 0 <= latest["neighbour_overlap"] <= 1 and latest["lora_drift"] > 0
    assert latest["effective_rank"] > 1 and 0 <= latest["cka_to_first"] < 1 and latest["tag_silhouette"]
    frame = query(collector.query, {"op": "history", "run": "run-5", "space": "lora", "version": versions[0]})
    assert len(frame["frame"]["points"]["x"]) == history["frames"][0]["points"]
    assert query(collector.query, {"op": "set", "n_neighbors": 1})["ok"] is False  # validated like the flag
    assert query(collector.query, {"op": "set", "buffer_size": 30})["ok"]
    stats = query(collector.query, {"op": "stats"})
    assert stats["runs"]["run-5"]["lora"]["buffered"] == 30


def test_exports_and_run_listing(collector, tmp_path):
    import subprocess
    import sys

    from support import REPO, child_env
    send_frames(collector.ingest, synthetic_frames(run="run-6", n_clips=15, steps=1))
    wait_for(lambda: all_projected(collector.query), timeout=60)

    def cli(*args):
        done = subprocess.run([sys.executable, "-m", "acestep_viz", *args], cwd=REPO, env=child_env(),
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    npz = cli("export", "--collector", collector.query, "--format", "npz", "--out", str(tmp_path / "npz"))
    import numpy as np
    with np.load(next((tmp_path / "npz").glob("*.npz")), allow_pickle=False) as data:
        assert data["latent_vectors"].shape == (15, 64) and data["lora_vectors"].shape == (45, 64)
        assert np.isfinite(data["prompt_coords"]).all()
    assert npz == str(tmp_path / "npz")
    cli("export", "--collector", collector.query, "--format", "tensorboard", "--out", str(tmp_path / "tb"))
    assert (tmp_path / "tb" / "projector_config.pbtxt").exists()
    html = cli("export", "--collector", collector.query, "--format", "html", "--out", str(tmp_path / "run.html"))
    page = (tmp_path / "run.html").read_text()
    assert html.endswith("run.html") and "Latent Space (Audio)" in page
    assert '<script src="http' not in page  # plotly.js is inside the file: it opens offline
    listing = cli("runs", "--store", str(collector.store_dir))
    assert "run-6" in listing


def test_five_clips_give_three_maps_drawn_by_pca_and_prompt_variants_share_their_clip(collector):
    """A LoRA dataset of 5 clips: every panel gets a map; a clip seen with two prompt texts has two prompt points."""
    frames = synthetic_frames(run="small", n_clips=5, steps=1, lora_layers=1)
    reworded = [f for f in synthetic_frames(run="small", n_clips=5, steps=1, lora_layers=1, prompt_suffix=", live")
                if f.space == "prompt"]
    send_frames(collector.ingest, frames + reworded)
    snap = wait_for(lambda: all_projected(collector.query, minimum=5), timeout=60)
    wait_for(lambda: query(collector.query, {"op": "snapshot", "since": None})["spaces"]["prompt"]["projected"] == 10)
    snap = query(collector.query, {"op": "snapshot", "since": None})
    assert {s: snap["spaces"][s]["method"] for s in SPACES} == dict.fromkeys(SPACES, "pca")
    assert {s: snap["spaces"][s]["projected"] for s in SPACES} == {"latent": 5, "lora": 5, "prompt": 10}
    prompt = snap["spaces"]["prompt"]["points"]
    assert len(set(prompt["id"])) == 5 and len(set(prompt["prompt"])) == 10
    frames_of_latent = query(collector.query, {"op": "history", "space": "latent"})["frames"]
    assert frames_of_latent[-1]["method"] == "pca"


def test_typed_replies_decode_to_the_same_points_as_lists(collector):
    send_frames(collector.ingest, synthetic_frames(run="run-typed", n_clips=20, steps=2))
    snap = wait_for(lambda: all_projected(collector.query), timeout=60)
    typed = query(collector.query, {"op": "snapshot", "since": None, "encoding": "typed"})
    assert typed["version"] == snap["version"]
    for space in SPACES:
        sent = typed["spaces"][space]["points"]
        assert isinstance(sent["x"], dict) and isinstance(sent["id"], dict)  # not lists of values
        assert decode_points(sent) == snap["spaces"][space]["points"]
    version = query(collector.query, {"op": "history", "run": "run-typed", "space": "lora"})["frames"][0]["version"]
    frames = [query(collector.query, {"op": "history", "run": "run-typed", "space": "lora", "version": version,
                                      "encoding": encoding})["frame"]["points"] for encoding in ("lists", "typed")]
    assert decode_points(frames[1]) == frames[0]
    refused = query(collector.query, {"op": "snapshot", "encoding": "msgpack"})
    assert refused["ok"] is False and "encoding must be one of lists, typed" in refused["error"]
