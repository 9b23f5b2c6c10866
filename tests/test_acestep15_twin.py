"""The ACE-Step 1.5 twin is faithful to 1.5's sources, and its Fabric loop carries the monitor end to end."""
import sys

import pytest
import torch
from acestep_viz.trainer_plugin.demo.acestep15.data import PreprocessedSongs, collate
from acestep_viz.trainer_plugin.demo.acestep15.model import AceStepConditionGenerationModel
from acestep_viz.trainer_plugin.demo.acestep15.module import PreprocessedLoRAModule
from acestep_viz.trainer_plugin.demo.acestep15.run import run_demo
from acestep_viz.trainer_plugin.demo.data import GENRES
from acestep_viz.trainer_plugin.presets import is_lora_layer
from acestep_viz.trainer_plugin.publisher import MemoryPublisher
from support import CollectorProcess, ManagedProcess, projected_snapshot, query, wait_for

SPACES = ("latent", "lora", "prompt")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return AceStepConditionGenerationModel()


def test_the_generation_model_has_the_real_module_paths(model):
    names = dict(model.named_modules())
    assert type(model.decoder).__name__ == "AceStepDiTModel"
    for name in ("decoder.time_embed", "decoder.time_embed_r", "decoder.condition_embedder", "decoder.proj_in",
                 "decoder.proj_out", "encoder", "decoder.layers.0.mlp"):
        assert name in names, name
    for attention in ("self_attn", "cross_attn"):
        q, k, v, o = (names[f"decoder.layers.0.{attention}.{p}_proj"] for p in "qkvo")
        assert q.out_features == o.out_features > k.out_features == v.out_features  # grouped-query attention


def test_peft_wraps_every_attention_projection_of_the_decoder():
    torch.manual_seed(0)
    training = PreprocessedLoRAModule(AceStepConditionGenerationModel())
    lora = [name for name, m in training.named_modules() if is_lora_layer(m) and hasattr(m, "lora_A")]
    assert len(lora) == 4 * 2 * 4  # layers x (self, cross) x (q, k, v, o)
    assert "model.decoder.base_model.model.layers.0.self_attn.o_proj" in lora
    assert all(not p.requires_grad for name, p in training.named_parameters() if "lora_" not in name)


def test_the_dit_gets_the_timesteps_through_a_time_embed_module_call(model):
    batch = collate([PreprocessedSongs(model.encoder, 1, GENRES[:1])[0]])
    seen = []
    handle = model.decoder.time_embed.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    t = torch.tensor([0.3])
    model.decoder(hidden_states=batch["target_latents"], timestep=t, timestep_r=t,
                  attention_mask=batch["attention_mask"], encoder_hidden_states=batch["encoder_hidden_states"],
                  encoder_attention_mask=batch["encoder_attention_mask"], context_latents=batch["context_latents"])
    handle.remove()
    assert len(seen) == 1 and torch.equal(seen[0], t)


def test_batches_are_padded_batch_first_with_masks_and_metadata_dicts(model):
    songs = PreprocessedSongs(model.encoder, 1, GENRES[:2])
    batch = collate([songs[0], songs[1]])
    lengths = [songs[i]["target_latents"].shape[0] for i in (0, 1)]
    assert batch["target_latents"].shape == (2, max(lengths), 64)
    assert batch["context_latents"].shape == (2, max(lengths), 128)
    assert batch["encoder_hidden_states"].shape[::2] == (2, 2048)
    assert batch["attention_mask"].sum(dim=1).tolist() == lengths  # 1 on real frames, 0 on padding
    assert [m["filename"] for m in batch["metadata"]] == [songs[i]["metadata"]["filename"] for i in (0, 1)]
    assert {"audio_path", "caption", "lyrics", "genre", "bpm"} <= set(batch["metadata"][0])


def test_genres_differ_in_latent_and_condition(model):
    songs = PreprocessedSongs(model.encoder, 2, GENRES[:2])
    means = [s["target_latents"].mean(0) for s in songs]  # order: genre 0, genre 1, genre 0, genre 1
    same, other = (means[0] - means[2]).norm(), (means[0] - means[1]).norm()
    assert same < other


@pytest.mark.parametrize("attach_first", [True, False])
def test_hooks_work_when_attached_before_or_after_fabric_setup(attach_first):
    from acestep_viz.trainer_plugin import attach
    from acestep_viz.trainer_plugin.demo.acestep15.run import Fabric, build

    module, songs, _ = build(clips_per_genre=1, validation_clips_per_genre=0)
    publisher = MemoryPublisher()
    tap = attach(module, preset="acestep15", publisher=publisher, run="setup") if attach_first else None
    fabric = Fabric(accelerator="cpu", devices=1, precision="32-true")
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad])
    module.model.decoder, optimizer = fabric.setup(module.model.decoder, optimizer)
    assert any(".decoder._forward_module.base_model.model.layers.0" in name for name, _ in module.named_modules())
    tap = tap or attach(module, preset="acestep15", publisher=publisher, run="setup")
    batch = collate([songs[0], songs[1]])
    with tap.step(0, 0, batch):
        loss = module.training_step(batch)
    fabric.backward(loss)
    tap.close()
    lora = [frame for frame in publisher.frames if frame.space == "lora"]
    assert len(set(lora[0].columns["layer"])) == 3 and lora[0].rows == 6
    assert all(t is not None for t in lora[0].columns["timestep"])


def test_the_fabric_loop_counts_optimizer_steps_and_captures_training_forwards_only():
    publisher = MemoryPublisher()
    summary = run_demo(steps=5, run="fabric-loop", monitor_options={"publisher": publisher})
    assert summary["steps"] == 5 and summary["validation_loss"] is not None
    monitor = summary["monitor"]
    # 30 clips in batches of 2: 15 micro-batches an epoch, 4 per optimizer step, the last 3 flushed at epoch end
    assert monitor["steps_seen"] == 15 + 4
    assert monitor["captures"]["lora"] == 3 * monitor["steps_seen"]  # validation and recompute add none
    lora = [frame for frame in publisher.frames if frame.space == "lora"]
    assert sorted({(f.step, f.micro_batch) for f in lora})[:5] == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 4)]
    assert {f.space for f in publisher.frames} == set(SPACES)


@pytest.mark.slow
def test_demo_acestep15_fills_all_three_spaces(tmp_path):
    with CollectorProcess(tmp_path / "store") as collector:
        demo = ManagedProcess([sys.executable, "-m", "acestep_viz", "demo", "--model", "acestep15", "--endpoint",
                               collector.ingest, "--steps", "20", "--run", "e2e-15"], log_path=tmp_path / "demo.log")
        with demo:
            snap = wait_for(lambda: projected_snapshot(collector.query, "e2e-15"), timeout=240, interval=1)
            demo.proc.wait(300)
        assert demo.proc.returncode == 0, demo.log_text()
        assert query(collector.query, {"op": "stats"})["models"]["e2e-15"] == "acestep15"
    assert snap["model"] == "acestep15"
    assert len(set(snap["spaces"]["lora"]["points"]["layer"])) == 3
    latent_ids = snap["spaces"]["latent"]["points"]["id"]
    assert len(latent_ids) == len(set(latent_ids)) and all(i.endswith(".wav") for i in latent_ids)
    assert snap["spaces"]["prompt"]["points"]["prompt"][0].split(",")[0] in {g.name for g in GENRES}
