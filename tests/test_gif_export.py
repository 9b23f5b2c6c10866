"""The GIF export of a live collector: over the query API and from the command line."""
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from support import REPO, CollectorProcess, child_env, query, send_frames, synthetic_frames, wait_for

pytestmark = pytest.mark.slow
SPACES = ("latent", "lora", "prompt")


def history_steps(endpoint: str, run: str) -> set:
    return {f["step"] for s in SPACES
            for f in query(endpoint, {"op": "history", "run": run, "space": s})["frames"]}


def projected(endpoint: str, run: str) -> dict:
    runs = query(endpoint, {"op": "stats"})["runs"]
    return {s: runs[run][s]["projected"] for s in SPACES} if run in runs else {}


def test_the_export_op_writes_an_animated_gif_of_the_map_history(tmp_path):
    with CollectorProcess(tmp_path / "store", extra_args=["--projection-interval-s", "0.2"]) as collector:
        collector.wait_ready()
        assert query(collector.query, {"op": "export", "format": "gif"})["ok"] is False  # nothing yet
        send_frames(collector.ingest, synthetic_frames(run="run-g", n_clips=15, steps=1))
        wait_for(lambda: len(history_steps(collector.query, "run-g")) == 1
                 and all(query(collector.query, {"op": "history", "run": "run-g", "space": s})["frames"]
                         for s in SPACES), timeout=60)
        send_frames(collector.ingest, [f for f in synthetic_frames(run="run-g", n_clips=15, steps=4, seed=1)
                                       if f.space == "lora" and f.step == 3])
        # every row in a map: no fit is due any more, so the history stays as it is from here on
        wait_for(lambda: projected(collector.query, "run-g") == {"latent": 15, "lora": 90, "prompt": 15}, timeout=60)
        steps = history_steps(collector.query, "run-g")
        reply = query(collector.query, {"op": "export", "run": "run-g", "format": "gif"}, timeout=60)
        assert reply["ok"] and reply["steps"] == len(steps)
        gif = Path(reply["files"][0])
        assert gif.parent.parent == collector.store_dir / "run-g" / "exports" and gif.name == "run-g.gif"
        assert Image.open(gif).n_frames == len(steps)

        done = subprocess.run([sys.executable, "-m", "acestep_viz", "export", "--collector", collector.query,
                               "--format", "gif", "--out", str(tmp_path / "gif")], cwd=REPO, env=child_env(),
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert Image.open(tmp_path / "gif" / "run-g.gif").n_frames == len(steps)
