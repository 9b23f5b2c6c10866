"""The whole path with real parts: twin training under Lightning -> ZeroMQ -> collector -> PaCMAP."""
import sys

import pytest
from support import CollectorProcess, ManagedProcess, projected_snapshot, wait_for

pytestmark = pytest.mark.slow
SPACES = ("latent", "lora", "prompt")


def test_demo_training_fills_all_three_spaces(tmp_path):
    with CollectorProcess(tmp_path / "store") as collector:
        demo = ManagedProcess([sys.executable, "-m", "acestep_viz", "demo", "--endpoint", collector.ingest,
                               "--steps", "60", "--run", "e2e-run"], log_path=tmp_path / "demo.log")
        with demo:
            snap = wait_for(lambda: projected_snapshot(collector.query, "e2e-run"), timeout=240, interval=1)
            demo.proc.wait(300)
        assert demo.proc.returncode == 0, demo.log_text()
    lora = snap["spaces"]["lora"]["points"]
    assert len(set(lora["layer"])) == 3  # first, middle and last block by default
    latent_ids = snap["spaces"]["latent"]["points"]["id"]
    assert len(latent_ids) == len(set(latent_ids))  # frozen space: one row per clip
    prompts = snap["spaces"]["prompt"]["points"]["prompt"]
    assert all(isinstance(p, str) and p for p in prompts)
    assert all(isinstance(step, int) for step in lora["step"])
