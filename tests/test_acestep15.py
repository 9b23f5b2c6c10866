"""ACE-Step 1.5 support: one test per fact of /work/shared/ACESTEP15.md the code relies on, on the 1.5 twin."""
import logging
import os

import numpy as np
import pytest
import torch
from acestep_viz.collector.state import CollectorState
from acestep_viz.dashboard.figures import build_figure
from acestep_viz.dashboard.model_labels import panel_title, stat_label
from acestep_viz.trainer_plugin import attach
from acestep_viz.trainer_plugin.acestep15 import Unwatched, watch
from acestep_viz.trainer_plugin.demo.acestep15 import module as twin_module
from acestep_viz.trainer_plugin.demo.acestep15.data import PreprocessedSongs, collate
from acestep_viz.trainer_plugin.demo.acestep15.model import AceStepConditionGenerationModel
from acestep_viz.trainer_plugin.demo.acestep15.module import PreprocessedLoRAModule
from acestep_viz.trainer_plugin.demo.data import GENRES
from acestep_viz.trainer_plugin.publisher import MemoryPublisher
from torch import nn

from acestep_viz.wire import Frame, ProtocolError, decode, encode

DEFAULT_LAYERS = ["layers.0.self_attn.o_proj", "layers.2.self_attn.o_proj", "layers.3.self_attn.o_proj"]


@pytest.fixture(scope="module")
def songs():
    torch.manual_seed(0)
    return PreprocessedSongs(AceStepConditionGenerationModel().encoder, clips_per_genre=1, genres=GENRES[:4])


@pytest.fixture
def module():
    torch.manual_seed(0)
    training = PreprocessedLoRAModule(AceStepConditionGenerationModel())
    training.model.decoder.gradient_checkpointing_enable()
    training.model.decoder.train()
    return training


def tap_on(target, **options):
    publisher = MemoryPublisher()
    return attach(target, preset="acestep15", publisher=publisher, run="r15", **options), publisher


def train_step(module, tap, batch, step=0, micro_batch=0):
    """What a 1.5 loop does: the step block around training_step, backward outside it."""
    with tap.step(step, micro_batch, batch):
        loss = module.training_step(batch)
    loss.backward()
    return loss


def frames_of(publisher, space):
    return [frame for frame in publisher.frames if frame.space == space]


class FabricModuleLike(nn.Module):
    """The wrapping ``fabric.setup`` puts around the decoder: the original under ``_forward_module``."""

    def __init__(self, inner):
        super().__init__()
        self._forward_module = inner

    def forward(self, *args, **kwargs):
        return self._forward_module(*args, **kwargs)


class DDPLike(FabricModuleLike):
    """Under Fabric DDP the original sits one level deeper, as DistributedDataParallel's ``module``."""

    def __init__(self, inner):
        nn.Module.__init__(self)
        self.module = inner

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


# ------------------------------------------------------------------ module paths


@pytest.mark.parametrize("wrapping", ["none", "fabric", "fabric+ddp"])
@pytest.mark.parametrize("target", ["training module", "generation model", "decoder"])
def test_lora_layers_are_found_below_the_dit_whatever_wraps_it(module, songs, wrapping, target):
    peft_decoder = module.model.decoder
    if wrapping == "fabric":
        module.model.decoder = FabricModuleLike(peft_decoder)
    elif wrapping == "fabric+ddp":
        module.model.decoder = FabricModuleLike(DDPLike(peft_decoder))
    chosen = {"training module": module, "generation model": module.model, "decoder": module.model.decoder}[target]
    tap, publisher = tap_on(chosen)
    assert tap.hooked["lora"] == DEFAULT_LAYERS  # first / middle / last layer, labelled below the DiT
    layer = peft_decoder.base_model.model.layers[0].self_attn.o_proj
    assert tap.bindings[[b.label for b in tap.bindings].index(DEFAULT_LAYERS[0])].module is layer
    train_step(module, tap, collate([songs[0]]))
    tap.close()
    assert {frame.space for frame in publisher.frames} == {"latent", "lora", "prompt"}


def test_user_globs_are_relative_to_the_dit(module):
    tap, _ = tap_on(module, lora_layers=["layers.*.cross_attn.o_proj"])
    assert tap.hooked["lora"] == [f"layers.{i}.cross_attn.o_proj" for i in range(4)]
    tap.close()


def test_without_a_dit_attach_names_what_to_pass():
    with pytest.raises(ValueError, match="AceStepDiTModel"):
        attach(nn.Linear(2, 2), preset="acestep15", publisher=MemoryPublisher(), strict=True)


# ------------------------------------------------------------------ batch layout, masks, metadata


def masked_mean(x, mask):
    weights = mask.float()[..., None]
    return ((x * weights).sum(1) / weights.sum(1)).numpy()


def test_latent_and_condition_are_mask_aware_means_of_the_padded_batch(module, songs):
    batch = collate([songs[0], songs[1]])
    assert batch["attention_mask"][0].sum() != batch["attention_mask"][1].sum()  # one clip is padded
    tap, publisher = tap_on(module)
    train_step(module, tap, batch)
    tap.close()
    latent, prompt = frames_of(publisher, "latent")[0], frames_of(publisher, "prompt")[0]
    np.testing.assert_allclose(latent.vectors.astype(np.float32),
                               masked_mean(batch["target_latents"], batch["attention_mask"]), rtol=2e-3, atol=2e-3)
    assert prompt.vectors.shape == (2, 2048)
    np.testing.assert_allclose(prompt.vectors.astype(np.float32),
                               masked_mean(batch["encoder_hidden_states"], batch["encoder_attention_mask"]),
                               rtol=2e-3, atol=2e-3)


def test_the_condition_is_read_before_the_steps_cfg_dropout(module, songs):
    module.cfg_ratio = 1.0  # every clip's condition is swapped for null_condition_emb inside the step
    batch = collate([songs[2]])
    tap, publisher = tap_on(module)
    train_step(module, tap, batch)
    tap.close()
    captured = frames_of(publisher, "prompt")[0].vectors.astype(np.float32)
    np.testing.assert_allclose(captured, masked_mean(batch["encoder_hidden_states"], batch["encoder_attention_mask"]),
                               rtol=2e-3, atol=2e-3)
    null = module.model.null_condition_emb.detach()[0, 0].numpy()
    assert not np.allclose(captured[0], null, atol=1e-2)


def test_clip_ids_come_from_filename_else_audio_path_and_prompts_from_caption(module, songs):
    first, second = dict(songs[0]), dict(songs[1])
    second["metadata"] = {k: v for k, v in second["metadata"].items() if k != "filename"}
    tap, publisher = tap_on(module)
    train_step(module, tap, collate([first, second]))
    tap.close()
    latent = frames_of(publisher, "latent")[0]
    assert latent.ids == [first["metadata"]["filename"], os.path.basename(second["metadata"]["audio_path"])]
    assert latent.columns["prompt"] == [first["metadata"]["caption"], second["metadata"]["caption"]]


def test_latent_and_condition_are_sent_once_per_clip(module, songs):
    tap, publisher = tap_on(module)
    for step in range(3):
        train_step(module, tap, collate([songs[0]]), step=step)
    tap.close()
    assert sum(frame.rows for frame in frames_of(publisher, "latent")) == 1
    assert sum(frame.rows for frame in frames_of(publisher, "prompt")) == 1
    assert len(frames_of(publisher, "lora")) == 3


def test_a_batch_without_the_tensors_is_reported_and_the_step_goes_on(module, songs, caplog):
    batch = {key: value for key, value in collate([songs[0]]).items() if key != "target_latents"}
    tap, _ = tap_on(module)
    with caplog.at_level(logging.WARNING, logger="acestep_viz"):
        with tap.step(0, 0, batch):
            pass
    tap.close()
    assert "target_latents" in caplog.text
    assert tap.stats()["errors"] == {"batch:latent": 1}


# ------------------------------------------------------------------ timesteps, validation, recompute


def test_timesteps_are_read_by_a_pre_hook_on_time_embed(module, songs, monkeypatch):
    chosen = torch.tensor([0.25, 0.75])
    monkeypatch.setattr(twin_module, "sample_timesteps", lambda batch_size: (chosen, chosen))
    tap, publisher = tap_on(module)
    train_step(module, tap, collate([songs[0], songs[1]]))
    tap.close()
    lora = frames_of(publisher, "lora")[0]
    assert lora.columns["timestep"] == pytest.approx([0.25, 0.75] * 3)


def test_validation_under_no_grad_captures_nothing(module, songs):
    tap, publisher = tap_on(module)
    train_step(module, tap, collate([songs[0]]))
    captured = tap.stats()["captures"]
    with torch.no_grad():
        module.training_step(collate([songs[1]]), record_loss=False)
    assert tap.stats()["captures"] == captured
    with torch.no_grad(), tap.step(1, 0, collate([songs[1]])):  # even inside a step block
        module.training_step(collate([songs[1]]), record_loss=False)
    tap.close()
    assert tap.stats()["captures"]["lora"] == captured["lora"]
    assert len(frames_of(publisher, "lora")) == 1  # the training step's only


def test_checkpoint_recompute_in_backward_captures_nothing(module, songs):
    tap, publisher = tap_on(module)
    batch = collate([songs[0]])
    with tap.step(0, 0, batch):
        loss = module.training_step(batch)
        loss.backward()  # the layers run again here (checkpointing): hooked, but inside the autograd engine
    tap.close()
    assert tap.stats()["captures"]["lora"] == 3
    assert frames_of(publisher, "lora")[0].rows == 3


# ------------------------------------------------------------------ ranks, LyCORIS, misconfiguration


class FabricRank:
    """The two attributes ``watch`` reads from a Fabric."""

    def __init__(self, global_rank, world_size=1):
        self.global_rank, self.world_size = global_rank, world_size


def test_rank_zero_publishes_by_default(module, songs):
    publisher = MemoryPublisher()
    tap = watch(module, fabric=FabricRank(1), publisher=publisher, run="ranked")
    train_step(module, tap, collate([songs[0]]))
    tap.close()
    assert not tap.active and publisher.frames == []
    everywhere = watch(module, fabric=FabricRank(1), publisher=MemoryPublisher(), run="ranked", all_ranks=True)
    assert everywhere.active and everywhere.rank == 1
    everywhere.close()


def test_a_second_watch_of_the_same_model_closes_the_first(module):
    first = watch(module, publisher=MemoryPublisher(), run="first")
    second = watch(module, publisher=MemoryPublisher(), run="second")
    assert first.closed and not second.closed
    second.close()


def lycoris_style(linear: nn.Linear, delta: nn.Linear) -> None:
    """What LyCORIS does for LoKr / LoHa: the original Linear's forward is swapped; no peft layer exists."""
    original = linear.forward
    linear.forward = lambda x: original(x) + delta(x)


def test_lycoris_style_layers_are_captured_by_their_output(songs):
    torch.manual_seed(0)
    model = AceStepConditionGenerationModel()
    model.decoder.train()
    deltas = [nn.Linear(64, 64) for _ in model.decoder.layers]
    for layer, delta in zip(model.decoder.layers, deltas):
        lycoris_style(layer.self_attn.o_proj, delta)
    seen = []
    model.decoder.layers[1].self_attn.o_proj.register_forward_hook(lambda m, a, out: seen.append(out.detach()))
    tap, publisher = tap_on(model, lora_layers=["layers.*.self_attn.o_proj"])
    assert tap.hooked["lora"] == [f"layers.{i}.self_attn.o_proj" for i in range(4)]
    batch = collate([songs[0]])
    with tap.step(0, 0, batch):
        model.decoder(hidden_states=batch["target_latents"], timestep=torch.tensor([0.5]),
                      timestep_r=torch.tensor([0.5]), attention_mask=batch["attention_mask"],
                      encoder_hidden_states=batch["encoder_hidden_states"],
                      encoder_attention_mask=batch["encoder_attention_mask"],
                      context_latents=batch["context_latents"])[0].sum().backward()
    tap.close()
    rows = frames_of(publisher, "lora")[0]
    second = rows.vectors[rows.columns["layer"].index("layers.1.self_attn.o_proj")].astype(np.float32)
    np.testing.assert_allclose(second, seen[0].mean(dim=1)[0].numpy(), rtol=2e-3, atol=2e-3)  # adapter included
    with pytest.raises(ValueError, match="not a peft LoRA layer"):
        attach(model, preset="acestep15", publisher=MemoryPublisher(), lora_output="delta", strict=True)


def test_a_misconfigured_watch_warns_once_and_training_goes_on(module, songs, caplog, monkeypatch):
    monkeypatch.delenv("ACESTEP_VIZ_STRICT", raising=False)
    with caplog.at_level(logging.WARNING, logger="acestep_viz"):
        monitor = watch(nn.Linear(2, 2), publisher=MemoryPublisher())
        bad_endpoint = watch(module, endpoint="not-an-endpoint")
        unknown = watch(module, sender="thread", publisher=MemoryPublisher())
    assert all(isinstance(m, Unwatched) for m in (monitor, bad_endpoint, unknown))
    assert caplog.text.count("training goes on without the embedding monitor") == 3
    assert "unknown option(s) sender" in caplog.text
    with monitor.step(0, 0, collate([songs[0]])):
        loss = module.training_step(collate([songs[0]]))
    assert torch.isfinite(loss)
    monitor.close()


def test_strict_makes_misconfiguration_an_error(monkeypatch):
    monkeypatch.setenv("ACESTEP_VIZ_STRICT", "1")
    with pytest.raises(ValueError, match="AceStepDiTModel"):
        watch(nn.Linear(2, 2), publisher=MemoryPublisher())
    monkeypatch.delenv("ACESTEP_VIZ_STRICT")
    with pytest.raises(ValueError, match="AceStepDiTModel"):
        watch(nn.Linear(2, 2), publisher=MemoryPublisher(), strict=True)
    with pytest.raises(TypeError, match="unknown option"):
        watch(nn.Linear(2, 2), sender="thread", strict=True)


def test_disabled_watch_hooks_nothing(module):
    monitor = watch(module, enabled=False)
    assert isinstance(monitor, Unwatched)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in module.modules())


# ------------------------------------------------------------------ wire, collector, dashboard


def model_frame(model):
    return Frame(run="r", space="prompt", step=1, vectors=np.ones((1, 4), np.float16), ids=["a.wav"], model=model)


def test_the_model_name_round_trips_and_old_frames_still_decode():
    assert decode(encode(model_frame("acestep15"))).model == "acestep15"
    assert b'"model"' not in bytes(encode(model_frame(None))[1])
    assert decode(encode(model_frame(None))).model is None


@pytest.mark.parametrize("bad", ["", "ACESTEP", "a" * 41, "x/y", 15])
def test_a_bad_model_name_is_rejected_with_its_reason(bad):
    parts = encode(model_frame("acestep15"))
    header = bytes(parts[1]).replace(b'"model":"acestep15"', b'"model":' + (
        str(bad).encode() if isinstance(bad, int) else b'"' + bad.encode() + b'"'))
    with pytest.raises(ProtocolError) as caught:
        decode([parts[0], header, parts[2]])
    assert caught.value.reason == "model"


def test_the_collector_reports_each_runs_model():
    state = CollectorState()
    state.accept(model_frame("acestep15"))
    old = model_frame(None)
    old.run = "v1-run"
    state.accept(old)
    assert state.stats()["models"] == {"r": "acestep15", "v1-run": None}
    assert state.snapshot("r", None)["model"] == "acestep15"
    assert {entry["run"]: entry["model"] for entry in state.run_list()} == {"r": "acestep15", "v1-run": None}


def test_the_dashboard_says_condition_for_an_acestep15_run():
    assert stat_label("prompt", "acestep15") == "Condition Space"
    assert stat_label("prompt", "acestep") == stat_label("prompt", None) == "Prompt Space"
    assert panel_title("prompt", "acestep15") == "Condition Embeddings"
    def titles(snapshot):
        return [annotation["text"] for annotation in build_figure(snapshot)["layout"]["annotations"]]

    assert "Condition Embeddings" in titles({"run": "r", "model": "acestep15", "spaces": {}})
    assert "Prompt Embeddings" not in titles({"run": "r", "model": "acestep15", "spaces": {}})
    assert "Prompt Embeddings" in titles({"run": "r", "spaces": {}})
