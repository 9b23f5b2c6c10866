"""EmbeddingMonitor under a real pytorch_lightning.Trainer on the ACE-Step twin."""
import logging
import subprocess
import sys
from collections import Counter
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
from acestep_viz.trainer_plugin import EmbeddingMonitor
from acestep_viz.trainer_plugin.demo import build_pipeline, run_demo
from acestep_viz.trainer_plugin.publisher import MemoryPublisher

from acestep_viz.settings import SettingError
from tests.support import free_port, wait_for
from tests.test_publisher import SubCollector

pytestmark = pytest.mark.filterwarnings("ignore:.*does not have many workers", "ignore:.*module\\(s\\) in eval mode",
                                          "ignore:.*LeafSpec")

ENV = ("ENABLED", "ENDPOINT", "RUN", "EVERY_N_STEPS", "LORA_LAYERS", "LORA_OUTPUT", "ALL_RANKS", "STRICT")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for name in ENV:
        monkeypatch.delenv(f"ACESTEP_VIZ_{name}", raising=False)


def twin(**kw):
    kw = {"batch_size": 2, "n_clips": 8, "every_plot_step": 2, "infer_steps": 1, **kw}
    return build_pipeline(**kw)


def fit(pipeline, monitor, steps, accumulate=1):
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         accumulate_grad_batches=accumulate, callbacks=[monitor])
    trainer.fit(pipeline)
    return trainer


def stub_trainer(rank=0, version=None):
    logger = SimpleNamespace(version=version) if version is not None else None
    return SimpleNamespace(global_rank=rank, logger=logger, strategy=SimpleNamespace(broadcast=lambda obj, src=0: obj))


def hook_count(model):
    return sum(len(m._forward_hooks) for m in model.modules())


@pytest.mark.slow
def test_frames_of_all_three_spaces_reach_a_subscriber():
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    pipeline = twin()
    pipeline = twin(repeat_count=1)  # four steps of two clips: each of the 8 clips visited once
    monitor = EmbeddingMonitor(endpoint=endpoint, run="lightning-test")
    with SubCollector(endpoint) as collector:
        fit(pipeline, monitor, steps=4)
        wait_for(lambda: len(collector.rows("lora")) == 4 * 6, timeout=5, interval=0.05)  # 3 layers x 2 clips
        wait_for(lambda: len(collector.rows("latent")) == 8, timeout=5, interval=0.05)
    assert pipeline.plot_steps == [0, 2]  # evaluations ran inside training steps 0 and 2 ...
    for space in ("latent", "prompt"):  # ... and added no rows: one row per clip, each clip once
        rows = collector.rows(space)
        assert len(rows) == len({r["id"] for r in rows}) == 8
        assert all(r["run"] == "lightning-test" and len(r["vector"]) == {"latent": 128, "prompt": 64}[space]
                   for r in rows)
    lora = collector.rows("lora")
    assert Counter((r["step"], r["micro_batch"]) for r in lora) == {(0, 0): 6, (1, 1): 6, (2, 2): 6, (3, 3): 6}
    assert all(len(r["vector"]) == 64 and {"timestep", "loss", "layer", "prompt"} <= set(r) for r in lora)
    # timesteps come from the transformer's timestep= argument (the twin, like ACE-Step, keeps them in a local)
    assert all(isinstance(r["timestep"], float) and 0 < r["timestep"] <= 1000 for r in lora)
    stats = monitor.stats()
    assert stats["errors"] == {} and stats["frames_dropped"] == 0 and stats["frames_sent"] == 12 + 1
    [sizes] = collector.adapter  # the one update-size message: step 0 (adapter_every 50), LoRA's B still zero
    assert sizes.step == 0 and len(sizes.layers) > 0 and set(sizes.layers.values()) == {0.0}
    assert hook_count(pipeline) == 0 and "plot_step" not in vars(pipeline)  # teardown cleaned up


def test_gradient_accumulation_keys_frames_by_step_and_batch():
    publisher = MemoryPublisher()
    pipeline = twin()
    fit(pipeline, EmbeddingMonitor(run="accumulate", publisher=publisher), steps=2, accumulate=2)
    keys = [(f.step, f.micro_batch) for f in publisher.frames if f.space == "lora"]
    assert keys == [(0, 0), (0, 1), (1, 2), (1, 3)]


@pytest.mark.slow
def test_no_collector_listening_the_demo_still_trains():
    summary = run_demo(endpoint=f"tcp://127.0.0.1:{free_port()}", steps=3, run="nobody-listens")
    assert summary["steps"] == 3
    stats = summary["monitor"]
    assert stats["frames_queued"] > 0 and stats["frames_sent"] == 0
    assert stats["frames_dropped"] == stats["frames_queued"]


def test_environment_configures_and_explicit_arguments_win(monkeypatch):
    monkeypatch.setenv("ACESTEP_VIZ_EVERY_N_STEPS", "5")
    monkeypatch.setenv("ACESTEP_VIZ_RUN", "from-env")
    monkeypatch.setenv("ACESTEP_VIZ_LORA_LAYERS", "transformer_blocks.*.cross_attn.to_v, speaker_embedder")
    monkeypatch.setenv("ACESTEP_VIZ_LORA_OUTPUT", "delta")
    pipeline = twin()
    monitor = EmbeddingMonitor(every_n_steps=1, publisher=MemoryPublisher())
    monitor.setup(stub_trainer(), pipeline, "fit")
    tap = monitor.tap
    assert (tap.every_n_steps, tap.run) == (1, "from-env")
    assert tap.hooked["lora"] == [f"transformers.transformer_blocks.{i}.cross_attn.to_v:delta" for i in range(4)] + [
        "transformers.speaker_embedder:delta"]
    monitor.teardown(None, pipeline, "fit")
    assert hook_count(pipeline) == 0


def test_rank_and_default_run_come_from_the_trainer(monkeypatch):
    pipeline = twin()
    quiet = EmbeddingMonitor(publisher=MemoryPublisher())
    quiet.setup(stub_trainer(rank=1, version="2025-01-01_my/exp"), pipeline, "fit")
    assert quiet.tap.run == "2025-01-01_my_exp" and not quiet.tap.active and hook_count(pipeline) == 0
    quiet.teardown(None, pipeline, "fit")
    monkeypatch.setenv("ACESTEP_VIZ_ALL_RANKS", "true")
    loud = EmbeddingMonitor(publisher=MemoryPublisher())
    loud.setup(stub_trainer(rank=1), pipeline, "fit")
    assert loud.tap.active and loud.tap.rank == 1
    loud.on_exception(None, pipeline, RuntimeError("boom"))
    assert hook_count(pipeline) == 0


def test_disabled_monitor_attaches_nothing(monkeypatch):
    monkeypatch.setenv("ACESTEP_VIZ_ENABLED", "false")
    pipeline = twin()
    monitor = EmbeddingMonitor(publisher=MemoryPublisher())
    monitor.setup(stub_trainer(), pipeline, "fit")
    assert monitor.tap is None and hook_count(pipeline) == 0 and monitor.stats() == {"active": False}


def test_bad_settings_fail_setup_saying_what_to_fix_when_strict(monkeypatch):
    pipeline = twin()
    monkeypatch.setenv("ACESTEP_VIZ_STRICT", "1")
    monkeypatch.setenv("ACESTEP_VIZ_LORA_OUTPUT", "sideways")
    with pytest.raises(SettingError, match="ACESTEP_VIZ_LORA_OUTPUT.*output, delta, both"):
        EmbeddingMonitor().setup(stub_trainer(), pipeline, "fit")
    monkeypatch.delenv("ACESTEP_VIZ_LORA_OUTPUT")
    with pytest.raises(ValueError, match="Closest module names: text_encoder_model"):
        EmbeddingMonitor(spaces={"prompt": ["text_encoder"]}, publisher=MemoryPublisher()).setup(
            stub_trainer(), pipeline, "fit")
    with pytest.raises(SettingError, match="ZeroMQ endpoint"):
        EmbeddingMonitor(endpoint="localhost:5557").setup(stub_trainer(), pipeline, "fit")
    with pytest.raises(TypeError, match="unknown option"):
        EmbeddingMonitor(frozen=True).setup(stub_trainer(), pipeline, "fit")
    monkeypatch.delenv("ACESTEP_VIZ_STRICT")
    with pytest.raises(ValueError, match="Closest module names"):
        EmbeddingMonitor(spaces={"prompt": ["text_encoder"]}, strict=True).setup(stub_trainer(), pipeline, "fit")
    assert hook_count(pipeline) == 0


@pytest.mark.parametrize("wrong", [dict(spaces={"prompt": ["text_encoder"]}), dict(endpoint="localhost:5557"),
                                   dict(frozen=True), dict(sender="thread"), dict(lora_output="sideways")])
def test_misconfigured_monitor_warns_once_and_training_finishes(monkeypatch, caplog, wrong):
    monitor, pipeline = EmbeddingMonitor(**wrong), twin()
    with caplog.at_level(logging.WARNING, logger="acestep_viz"):
        trainer = fit(pipeline, monitor, steps=2)
    warnings = [r.getMessage() for r in caplog.records if "without the embedding monitor" in r.getMessage()]
    assert len(warnings) == 1 and "EmbeddingMonitor" in warnings[0]
    assert trainer.global_step == 2
    assert monitor.stats() == {"active": False} and hook_count(pipeline) == 0


@pytest.mark.slow
def test_importing_the_package_pulls_in_neither_torch_nor_lightning():
    code = ("import sys, acestep_viz, acestep_viz.trainer_plugin.settings; "
            "assert 'pytorch_lightning' not in sys.modules and 'torch' not in sys.modules, 'eager import'; "
            "acestep_viz.attach; assert 'pytorch_lightning' not in sys.modules, 'attach pulled lightning'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
