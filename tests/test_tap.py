"""The tap on the ACE-Step twin: each trainer-side gotcha from the design, one test each."""
import logging

import numpy as np
import pytest
import torch
from acestep_viz.trainer_plugin import attach
from acestep_viz.trainer_plugin.demo import SyntheticSongs, build_pipeline, collate
from acestep_viz.trainer_plugin.publisher import MemoryPublisher
from acestep_viz.trainer_plugin.tap import output_tensor

from tests.support import free_port

pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log")

LORA_LAYER = "transformers.transformer_blocks.0.attn.to_out.0"


@pytest.fixture(scope="module")
def pipeline():
    model = build_pipeline(batch_size=3, every_plot_step=1)  # plot_step evaluates on every step
    model.hparams.infer_steps = 1
    model.train()
    return model


@pytest.fixture
def fast(pipeline):
    """The pipeline with plot_step stubbed out, for tests about something other than evaluation."""
    pipeline.plot_step = lambda batch, batch_idx: None
    yield pipeline
    del pipeline.plot_step


@pytest.fixture(scope="module")
def songs():
    return SyntheticSongs(n_clips=12)


def batch_of(songs, indices):
    return collate([songs[i] for i in indices])


def train_step(pipeline, tap, batch, step=0, batch_idx=0, disarm=True):
    """What Lightning does around one training batch, with the callback's tap calls."""
    tap.arm(step, batch_idx, batch)
    loss = pipeline.training_step(batch, batch_idx)  # plot_step, preprocess, checkpointed forward
    if disarm:
        tap.disarm()
    loss.backward()
    pipeline.zero_grad(set_to_none=True)
    tap.flush(loss=loss)


def frames_of(publisher, space):
    return [f for f in publisher.frames if f.space == space]


def hook_count(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def monitor(pipeline, **kw):
    publisher = kw.pop("publisher", None) or MemoryPublisher()
    kw.setdefault("eval_methods", ("plot_step",))
    kw.setdefault("adapter_every", 0)  # these tests count frames; adapter messages: tests/test_adapter_size.py
    return attach(pipeline, run="tap-test", publisher=publisher, **kw), publisher


# ---------------------------------------------------------------------------- (1) and (5)

def test_latent_rows_map_to_clips_in_call_order_and_lengths_pool_alike(pipeline, songs):
    batch = batch_of(songs, [4, 0, 9])
    per_clip = []
    grab = pipeline.dcae.dcae.encoder.register_forward_hook(lambda m, a, out: per_clip.append(out.detach()))
    pipeline.dcae.encode(batch["target_wavs"], batch["wav_lengths"])
    grab.remove()
    assert len({out.shape[-1] for out in per_clip}) == 3  # three clips, three latent lengths

    tap, publisher = monitor(pipeline)
    with tap:
        train_step(pipeline, tap, batch)
    (latent,) = frames_of(publisher, "latent")
    assert latent.ids == batch["keys"] and latent.vectors.shape == (3, 128)
    expected = torch.cat([out.mean(-1).flatten(1) for out in per_clip]).numpy()
    np.testing.assert_allclose(latent.vectors.astype(np.float32), expected, atol=2e-3, rtol=2e-3)
    assert latent.meta[1]["prompt"] == batch["prompts"][1]


def test_prompt_rows_are_mask_aware_means_of_the_text_encoder(fast, songs):
    batch = batch_of(songs, [1, 2, 3])
    tap, publisher = monitor(fast)
    with tap:
        train_step(fast, tap, batch)
    (prompt,) = frames_of(publisher, "prompt")
    tokenizer, encoder = fast.text_tokenizer, fast.text_encoder_model
    assert len({int(n) for n in tokenizer(batch["prompts"])["attention_mask"].sum(1)}) > 1  # padding present
    with torch.no_grad():
        alone = torch.cat([encoder(**tokenizer([p])).last_hidden_state.mean(1) for p in batch["prompts"]])
    assert prompt.ids == batch["keys"] and prompt.vectors.shape == (3, 64)
    np.testing.assert_allclose(prompt.vectors.astype(np.float32), alone.numpy(), atol=2e-3, rtol=2e-3)


# ---------------------------------------------------------------------------- (2)

def test_checkpoint_recompute_during_backward_is_not_captured(fast, songs):
    batch = batch_of(songs, [0, 1, 2])
    layer = fast.transformers.get_submodule("transformer_blocks.0.attn.to_out.0")
    in_backward = []
    spy = layer.register_forward_hook(lambda *a: in_backward.append(torch._C._current_graph_task_id() != -1))
    tap, publisher = monitor(fast)
    with tap:
        train_step(fast, tap, batch, disarm=False)  # backward while still armed: the hook guard alone
    spy.remove()
    assert any(in_backward), "the twin should recompute checkpointed blocks during backward"
    (lora,) = frames_of(publisher, "lora")
    assert lora.vectors.shape[0] == 3 * 3  # three layers x three clips, not twice that
    assert tap.stats()["captures"]["lora"] == 3


# ---------------------------------------------------------------------------- (3)

def test_evaluation_forwards_are_not_captured(pipeline, songs):
    batch = batch_of(songs, [5, 6, 7])
    plots_before = len(pipeline.plot_steps)
    tap, publisher = monitor(pipeline, frozen_once=False)  # the same clips again below must be captured
    with tap:
        train_step(pipeline, tap, batch)  # plot_step runs the encoders and 3 transformer passes first
        assert len(pipeline.plot_steps) == plots_before + 1
        assert tap.stats()["captures"] == {"latent": 3, "prompt": 1, "lora": 3}
        assert [f.vectors.shape[0] for f in publisher.frames] == [3, 3, 9]

        tap.arm(1, 0, batch)
        with torch.no_grad():
            pipeline.predict_step(batch)  # an evaluation forward that is not wrapped: grad gating
        assert tap.stats()["captures"]["lora"] == 3
        assert tap.stats()["captures"]["latent"] == 6  # frozen modules run under no_grad even in training
        tap.discard()
    assert "plot_step" not in vars(pipeline)  # the wrapper is gone after close
    assert pipeline.plot_step.__func__ is type(pipeline).plot_step


# ---------------------------------------------------------------------------- (4)

@pytest.mark.parametrize("frozen_once", [True, False])
def test_frozen_spaces_are_published_once_per_clip(fast, songs, frozen_once):
    """Latents once per clip; prompts once per (clip, prompt text): clip 2 comes back with a new text."""
    first, overlapping = batch_of(songs, [0, 1, 2]), batch_of(songs, [2, 3, 4])
    tap, publisher = monitor(fast, frozen_once=frozen_once)
    with tap:
        for step, batch in enumerate([first, first, overlapping]):
            train_step(fast, tap, batch, step=step)
    latent = [(f.step, f.ids) for f in frames_of(publisher, "latent")]
    prompt = [(f.step, f.ids) for f in frames_of(publisher, "prompt")]
    if frozen_once:
        expected = [(0, first["keys"]), (2, overlapping["keys"][1:])]
        seen_texts = set(zip(first["keys"], first["prompts"]))
        again = [k for k, p in zip(overlapping["keys"], overlapping["prompts"]) if (k, p) not in seen_texts]
        expected_prompt = [(0, first["keys"]), (2, again)]
    else:
        expected = expected_prompt = [(0, first["keys"]), (1, first["keys"]), (2, overlapping["keys"])]
    assert latent == expected
    assert prompt == expected_prompt
    assert [f.step for f in frames_of(publisher, "lora")] == [0, 1, 2]  # LoRA outputs evolve: every step


class RefusesFirst(MemoryPublisher):
    """A publisher whose queue is full for the first step only."""

    def publish(self, item):
        if not hasattr(self, "refused"):
            self.refused = True
            return False
        return super().publish(item)


def test_clips_of_a_step_the_publisher_refused_are_sent_with_a_later_step(fast, songs):
    batch = batch_of(songs, [0, 1, 2])
    tap, publisher = monitor(fast, publisher=RefusesFirst())
    with tap:
        for step in range(2):
            train_step(fast, tap, batch, step=step)
    assert [(f.step, f.ids) for f in frames_of(publisher, "latent")] == [(1, batch["keys"])]


def test_clips_already_sent_cost_no_pooling_in_frozen_spaces(fast, songs):
    first, overlapping = batch_of(songs, [0, 1, 2]), batch_of(songs, [2, 3, 4])
    tap, publisher = monitor(fast)
    with tap:
        train_step(fast, tap, first, step=0)
        train_step(fast, tap, first, step=1)
        assert tap.stats()["captures"] == {"latent": 3, "prompt": 1, "lora": 6}  # step 1: LoRA only
        train_step(fast, tap, overlapping, step=2)  # clip 2 was sent: its latent firing is skipped
        assert tap.stats()["captures"] == {"latent": 5, "prompt": 2, "lora": 9}
    latent = frames_of(publisher, "latent")
    assert [f.ids for f in latent] == [first["keys"], overlapping["keys"][1:]]


# ---------------------------------------------------------------------------- (6)

def test_bfloat16_activations_are_captured(fast, songs):
    batch = batch_of(songs, [0, 1, 2])
    dtypes = []
    spy = fast.transformers.get_submodule("transformer_blocks.0.attn.to_out.0").register_forward_hook(
        lambda m, a, out: dtypes.append(out.dtype))
    tap, publisher = monitor(fast, lora_output="both")
    with tap:
        tap.arm(0, 0, batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = fast.training_step(batch, 0)
        tap.disarm()
        loss.float().backward()
        fast.zero_grad(set_to_none=True)
        tap.flush(loss=loss)
        stats = tap.stats()
    spy.remove()
    assert torch.bfloat16 in dtypes
    assert stats["errors"] == {}
    (lora,) = frames_of(publisher, "lora")
    assert lora.vectors.dtype == np.float16 and lora.vectors.shape == (18, 64)
    assert np.isfinite(lora.vectors).all() and np.abs(lora.vectors).sum() > 0
    assert all(isinstance(m["loss"], float) for m in lora.meta)


# ---------------------------------------------------------------------------- (7)

@pytest.mark.slow
def test_training_finishes_with_no_collector_and_drops_are_counted(fast, songs):
    batch = batch_of(songs, [0, 1, 2])
    tap = attach(fast, endpoint=f"tcp://127.0.0.1:{free_port()}", run="nobody-listens",
                 eval_methods=("plot_step",), adapter_every=0)
    for step in range(3):
        train_step(fast, tap, batch, step=step)
    tap.close()
    stats = tap.stats()
    assert stats["frames_queued"] == 5  # latent + prompt once, lora on three steps
    assert stats["frames_sent"] == 0 and stats["frames_dropped"] == 5
    assert hook_count(fast) == 0


# ---------------------------------------------------------------------------- LoRA rows

def test_lora_rows_carry_layer_and_the_timesteps_the_transformer_got(fast, songs):
    batch = batch_of(songs, [3, 8, 10])
    given = []
    spy = fast.transformers.register_forward_pre_hook(
        lambda m, args, kwargs: given.append(kwargs["timestep"].detach().clone()), with_kwargs=True)
    tap, publisher = monitor(fast)
    try:
        with tap:
            train_step(fast, tap, batch, step=7, batch_idx=2)  # passes no timesteps: the tap reads them
    finally:
        spy.remove()
    (lora,) = frames_of(publisher, "lora")
    assert (lora.step, lora.micro_batch) == (7, 2)
    assert lora.ids == batch["keys"] * 3
    assert [m["layer"] for m in lora.meta] == [f"transformers.transformer_blocks.{i}.attn.to_out.0"
                                               for i in (0, 2, 3) for _ in range(3)]
    (timesteps,) = given  # one training forward (plot_step is stubbed out here)
    assert [m["timestep"] for m in lora.meta] == pytest.approx(timesteps.tolist() * 3)
    assert len(set(timesteps.tolist())) > 1  # rows carry their own sample's timestep
    assert len({m["loss"] for m in lora.meta}) == 1  # the step's one loss: no per-sample loss exists


def test_timesteps_ignore_plot_step_and_checkpoint_recompute(pipeline, songs):
    """plot_step calls the transformer first (inference timesteps); only the training forward counts."""
    batch = batch_of(songs, [0, 1, 2])
    given = []
    spy = pipeline.transformers.register_forward_pre_hook(
        lambda m, args, kwargs: given.append((torch.is_grad_enabled(), kwargs["timestep"].detach().clone())),
        with_kwargs=True)
    tap, publisher = monitor(pipeline)
    try:
        with tap:
            train_step(pipeline, tap, batch, step=0)
    finally:
        spy.remove()
    training = [t for grad, t in given if grad]
    assert len(given) > len(training) == 1  # plot_step ran the transformer under no_grad first
    (lora,) = frames_of(publisher, "lora")
    assert [m["timestep"] for m in lora.meta[:3]] == pytest.approx(training[0].tolist())


def test_explicit_per_row_values_from_note_win(fast, songs):
    batch = batch_of(songs, [0, 1, 2])
    tap, publisher = monitor(fast)
    with tap:
        tap.arm(0, 0, batch)
        loss = fast.training_step(batch, 0)
        tap.note(timesteps=torch.tensor([1.0, 2.0, 3.0]), sample_losses=torch.tensor([0.1, 0.2, 0.3]))
        tap.disarm()
        loss.backward()
        fast.zero_grad(set_to_none=True)
        tap.flush(loss=loss)
    (lora,) = frames_of(publisher, "lora")
    assert [m["timestep"] for m in lora.meta[:3]] == [1.0, 2.0, 3.0]
    assert [m["loss"] for m in lora.meta[:3]] == pytest.approx([0.1, 0.2, 0.3])


def test_each_prompt_text_of_a_clip_is_its_own_prompt_row_once(fast):
    """ACE-Step draws a new prompt text for a clip on every visit: each distinct text is sent once, the
    latent once per clip."""
    songs = SyntheticSongs(n_clips=3, repeat_count=4)
    tap, publisher = monitor(fast)
    visits = []
    with tap:
        for step in range(8):
            batch = collate([songs[i] for i in range(3)])
            visits += list(zip(batch["keys"], batch["prompts"]))
            train_step(fast, tap, batch, step=step)
    prompt_rows = [(f.ids[i], m["prompt"]) for f in frames_of(publisher, "prompt") for i, m in enumerate(f.meta)]
    latent_ids = [i for f in frames_of(publisher, "latent") for i in f.ids]
    assert sorted(prompt_rows) == sorted(set(visits))  # every distinct (clip, text), each once
    assert len(set(visits)) > 3  # the clips did come back with other texts
    assert sorted(latent_ids) == sorted({key for key, _ in visits})


def test_delta_is_the_adapter_contribution_times_scaling(fast, songs):
    batch = batch_of(songs, [0, 1, 2])
    layer = fast.get_submodule(LORA_LAYER)
    adapter = layer.active_adapters[0]
    assert layer.scaling[adapter] != 1.0
    lora_b = layer.lora_B[adapter]
    saved = lora_b.weight.detach().clone()
    inputs = []
    spy = layer.register_forward_hook(lambda m, a, out: inputs.append(a[0].detach()))
    try:
        with torch.no_grad():
            lora_b.weight.normal_(0.0, 0.5)  # peft starts lora_B at zero: make the delta visible
        tap, publisher = monitor(fast, spaces={"lora": [LORA_LAYER]}, lora_output="both")
        with tap:
            tap.arm(0, 0, batch)
            loss = fast.training_step(batch, 0)
            tap.flush(loss=loss)
        with torch.no_grad():
            x = inputs[0]
            expected_output = layer(x).mean(1)
            expected_delta = (layer(x) - layer.base_layer(x)).mean(1)
    finally:
        spy.remove()
        with torch.no_grad():
            lora_b.weight.copy_(saved)
    (lora,) = frames_of(publisher, "lora")
    rows = {label: lora.vectors[[i for i, m in enumerate(lora.meta) if m["layer"] == label]].astype(np.float32)
            for label in (LORA_LAYER, LORA_LAYER + ":delta")}
    np.testing.assert_allclose(rows[LORA_LAYER], expected_output.numpy(), atol=3e-3, rtol=3e-3)
    np.testing.assert_allclose(rows[LORA_LAYER + ":delta"], expected_delta.numpy(), atol=3e-3, rtol=3e-3)


# ---------------------------------------------------------------------------- selection

def test_unknown_module_path_lists_close_matches(pipeline):
    with pytest.raises(ValueError, match="dcae.dcae.encoder") as error:
        attach(pipeline, spaces={"latent": ["dcae.dcae.encodr"]}, publisher=MemoryPublisher(), strict=True)
    assert "latent" in str(error.value)
    assert hook_count(pipeline) == 0


@pytest.mark.parametrize("wrong", [dict(spaces={"latent": ["dcae.dcae.encodr"]}), dict(every_n_steps=0),
                                   dict(endpoint="localhost:5557"), dict(lora_output="sideways")])
def test_misconfigured_attach_warns_once_and_training_goes_on(fast, songs, caplog, monkeypatch, wrong):
    monkeypatch.delenv("ACESTEP_VIZ_STRICT", raising=False)
    with caplog.at_level(logging.WARNING, logger="acestep_viz"):
        tap = attach(fast, run="bad", **wrong)
    warnings = [r for r in caplog.records if "training goes on without the embedding monitor" in r.getMessage()]
    assert len(warnings) == 1
    assert not tap.active and hook_count(fast) == 0
    with tap:
        for step in range(2):
            train_step(fast, tap, batch_of(songs, [0, 1, 2]), step=step)
        assert tap.stats()["frames_queued"] == 0


def test_strict_environment_makes_misconfiguration_an_error(fast, monkeypatch):
    monkeypatch.setenv("ACESTEP_VIZ_STRICT", "1")
    with pytest.raises(ValueError, match="every_n_steps"):
        attach(fast, run="bad", every_n_steps=0)
    assert hook_count(fast) == 0


def test_lora_globs_select_peft_layers_by_type(pipeline):
    tap, _ = monitor(pipeline, lora_layers=["transformer_blocks.*.cross_attn.to_q"])
    with tap:
        labels = tap.hooked["lora"]
    assert labels == [f"transformers.transformer_blocks.{i}.cross_attn.to_q" for i in range(4)]


def test_explicit_paths_capture_whatever_the_module_returns(fast, songs):
    from transformers.modeling_outputs import BaseModelOutput

    x = torch.ones(2, 3, 4)
    outputs = (x, (x, None), [x], {"sample": x}, BaseModelOutput(last_hidden_state=x))
    assert all(output_tensor(out) is x for out in outputs)
    batch = batch_of(songs, [0, 1, 2])
    # The whole transformer returns a dataclass with .sample (B, 8, 16, T); lyric layers return tensors.
    tap, publisher = monitor(fast, preset=None, spaces={"lora": ["transformers", "transformers.lyric_encoder"]})
    with tap:
        with tap.step(0, 0, batch, loss=0.25):
            fast.training_step(batch, 0)
    (lora,) = frames_of(publisher, "lora")
    assert lora.vectors.shape == (3, 128)  # the lyric encoder's 32-d rows are skipped: one size per frame
    assert tap.stats()["errors"] == {"dim_mismatch": 1}
    assert [m["loss"] for m in lora.meta] == [0.25] * 3


class ScalesInPlace(torch.nn.Module):
    """A model that changes one module's output in place after that module returned it."""

    def __init__(self):
        super().__init__()
        self.changed, self.kept = torch.nn.Linear(4, 4), torch.nn.Linear(4, 4)

    def forward(self, x):
        y = self.changed(x)
        y.mul_(2.0)
        return self.kept(y)


def test_an_output_changed_in_place_after_its_hook_is_skipped_and_reported(caplog):
    model = ScalesInPlace()
    tap, publisher = monitor(model, preset=None, frozen_once=False,
                             spaces={"latent": ["changed"], "prompt": ["kept"]})
    x = torch.randn(3, 4)
    with caplog.at_level(logging.WARNING, logger="acestep_viz"), tap, torch.no_grad():
        with tap.step(0, 0, {"keys": ["a", "b", "c"]}):
            expected = model(x)
    assert [f.space for f in publisher.frames] == ["prompt"]  # pooled once the forward was over
    np.testing.assert_allclose(publisher.frames[0].vectors, expected.numpy().astype(np.float16), rtol=1e-3)
    assert tap.stats()["errors"] == {"capture:latent": 1}
    assert any("changed in place" in r.getMessage() for r in caplog.records)


class Strided(torch.nn.Module):
    """Modules whose outputs are views with strides of their own (a transpose, a permutation)."""

    def __init__(self):
        super().__init__()
        self.rows, self.sequence, self.channels = torch.nn.Identity(), torch.nn.Identity(), torch.nn.Identity()

    def forward(self, x):
        return (self.rows(x[:, :, 0].t()), self.sequence(x.permute(1, 2, 0)),
                self.channels(x.permute(1, 0, 2).unsqueeze(1)))


class RecordPublisher:
    """Takes each step the way the publisher's sender thread does: calls it for its step record."""

    def __init__(self):
        self.records = []

    def publish(self, item) -> bool:
        self.records.append(item())
        return True

    def stats(self) -> dict:
        return {}

    def close(self) -> None:
        pass


class HeldPublisher(RecordPublisher):
    """Holds steps until ``send``, as the publisher holds them until their batch is due."""

    def __init__(self):
        super().__init__()
        self.held = []

    def publish(self, item) -> bool:
        self.held.append(item)
        return True

    def send(self) -> None:
        self.records += [item() for item in self.held]
        self.held.clear()


def test_metadata_tensors_reused_in_place_after_the_step_are_sent_with_the_steps_own_values(fast, songs):
    """A step waits for its batch (up to batch_s); a loop that writes the next step's timesteps and
    losses into the same tensors meanwhile must not change what the waiting step reports."""
    publisher = HeldPublisher()
    tap = attach(fast, run="reuse", frozen_once=False, publisher=publisher, adapter_every=0)
    timesteps, sample_losses, loss = torch.tensor([100.0, 200.0]), torch.tensor([0.25, 0.5]), torch.tensor(1.5)
    with tap:
        for step in range(2):
            batch = batch_of(songs, [2 * step, 2 * step + 1])
            with tap.step(step, 0, batch):
                fast.training_step(batch, 0)
                tap.note(loss=loss, timesteps=timesteps, sample_losses=sample_losses)
            for reused in (timesteps, sample_losses, loss):
                reused.add_(1000.0)  # the loop's buffers, overwritten for the next step
        publisher.send()
    first, second = publisher.records
    assert (first.timesteps, first.sample_losses, first.loss) == ([100.0, 200.0], [0.25, 0.5], [1.5])
    assert (second.timesteps, second.sample_losses, second.loss) == ([1100.0, 1200.0], [1000.25, 1000.5], [1001.5])


def test_outputs_with_strides_of_their_own_reach_the_publisher_with_the_right_values():
    model = Strided()
    publisher = RecordPublisher()
    tap = attach(model, preset=None, frozen_once=False, publisher=publisher,
                 spaces={"latent": ["rows", "channels"], "prompt": ["sequence"]})
    x = torch.randn(5, 3, 4)  # (features, rows, time)
    with tap, tap.step(0, 0, {"keys": ["a", "b", "c"]}):
        model(x)
    vectors = {c.label: c.pooled() for c in publisher.records[0].captures}
    np.testing.assert_allclose(vectors["rows"], x[:, :, 0].t().numpy(), rtol=1e-6)
    np.testing.assert_allclose(vectors["sequence"], x.permute(1, 2, 0).mean(1).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(vectors["channels"], x.permute(1, 0, 2).mean(-1).numpy(), rtol=1e-5, atol=1e-6)


def test_delta_of_a_plain_module_is_a_clear_error(pipeline):
    with pytest.raises(ValueError, match="not a peft LoRA layer"):
        attach(pipeline, spaces={"lora": ["transformers.proj_in"]}, lora_output="delta", publisher=MemoryPublisher(),
               strict=True)


# ---------------------------------------------------------------------------- lifecycle

def test_close_twice_is_safe_and_removes_every_hook(pipeline):
    tap, _ = monitor(pipeline, lora_output="both")
    tap.arm(0, 0)
    assert hook_count(pipeline) == 9  # latent, prompt, 3 layers x (output, delta), the timestep pre-hook
    tap.close()  # inside an armed step
    tap.close()
    assert hook_count(pipeline) == 0
    assert "plot_step" not in vars(pipeline)


def test_every_n_steps_skips_steps(fast, songs):
    batch = batch_of(songs, [0, 1, 2])
    tap, publisher = monitor(fast, every_n_steps=2, frozen_once=False)
    with tap:
        for step in range(4):
            with tap.step(step, 0, batch):
                fast.preprocess(batch)
        stats = tap.stats()
    assert sorted({f.step for f in publisher.frames}) == [0, 2]
    assert (stats["steps_seen"], stats["steps_captured"]) == (4, 2)


def test_hooks_stay_in_place_and_capture_only_armed_training_forwards_until_close(pipeline, songs):
    """attach registers the hooks once; their guards alone keep forwards between steps, skipped steps,
    evaluation (plot_step) and backward's recompute out of the captures."""
    batch = batch_of(songs, [0, 1, 2])
    tap, publisher = monitor(pipeline, every_n_steps=2, frozen_once=False)
    one_step = {"latent": 3, "prompt": 1, "lora": 3}
    with tap:
        assert hook_count(pipeline) == 6  # latent, prompt, three LoRA layers, the timestep pre-hook
        pipeline.preprocess(batch)  # a forward between steps
        assert tap.stats()["captures"] == {}
        train_step(pipeline, tap, batch, step=0, disarm=False)  # plot_step, the forward and the recompute, armed
        assert tap.stats()["captures"] == one_step
        train_step(pipeline, tap, batch, step=1)  # skipped: every_n_steps=2
        assert tap.stats()["captures"] == one_step and hook_count(pipeline) == 6
    assert hook_count(pipeline) == 0
    pipeline.preprocess(batch)
    assert tap.stats()["captures"] == one_step
    assert [f.vectors.shape[0] for f in publisher.frames] == [3, 3, 9]


def test_a_hook_that_replaces_the_output_does_not_change_what_is_captured(fast, songs):
    batch = batch_of(songs, [0, 1, 2])
    layer = fast.get_submodule(LORA_LAYER)
    tap, publisher = monitor(fast, spaces={"lora": [LORA_LAYER]}, frozen_once=False)
    zeroing = layer.register_forward_hook(lambda module, args, output: output * 0)  # registered after the tap
    try:
        with tap:
            for step in range(2):
                train_step(fast, tap, batch, step=step)
    finally:
        zeroing.remove()
    frames = frames_of(publisher, "lora")
    assert len(frames) == 2 and all(np.abs(f.vectors.astype(np.float32)).max() > 0.01 for f in frames)


def test_nothing_is_captured_outside_an_armed_step(fast, songs):
    batch = batch_of(songs, [0, 1, 2])
    tap, publisher = monitor(fast)
    with tap:
        fast.preprocess(batch)
        with tap.step(0, 0, batch):
            fast.preprocess(batch)
        fast.preprocess(batch)
        assert tap.stats()["captures"] == {"latent": 3, "prompt": 1}


def test_a_failing_step_block_discards_its_captures(fast, songs):
    batch = batch_of(songs, [0, 1, 2])
    tap, publisher = monitor(fast)
    with tap:
        with pytest.raises(RuntimeError):
            with tap.step(0, 0, batch):
                fast.preprocess(batch)
                raise RuntimeError("forward failed")
        assert publisher.frames == []
        with tap.step(1, 0, batch):
            fast.preprocess(batch)
    assert [f.step for f in publisher.frames] == [1, 1]


def test_hook_errors_never_reach_training_and_are_logged_once(fast, songs, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("pooling exploded")

    monkeypatch.setattr("acestep_viz.trainer_plugin.tap.pool_sum", broken)
    batch = batch_of(songs, [0, 1, 2])
    tap, publisher = monitor(fast)
    with caplog.at_level(logging.WARNING, logger="acestep_viz"), tap:
        train_step(fast, tap, batch)
        train_step(fast, tap, batch, step=1)
        stats = tap.stats()
    assert stats["errors"] == {"capture:latent": 6, "capture:prompt": 2, "capture:lora": 6}
    assert publisher.frames == []
    logged = [r.getMessage() for r in caplog.records if "pooling exploded" in r.getMessage()]
    assert len(logged) == 3  # one per kind


def test_a_space_that_never_fires_gets_one_warning(fast, songs, caplog):
    never_called = "transformers.transformer_blocks.0.cross_attn.to_add_out"  # exists, never called
    batch = batch_of(songs, [0, 1, 2])
    tap, _ = monitor(fast, preset=None, spaces={"lora": [never_called], "latent": ["dcae.dcae.encoder"]},
                     warn_after_steps=2)
    with caplog.at_level(logging.WARNING, logger="acestep_viz"), tap:
        for step in range(5):
            with tap.step(step, 0, batch):
                fast.preprocess(batch)
    warnings = [r.getMessage() for r in caplog.records if "captured nothing" in r.getMessage()]
    assert len(warnings) == 1
    assert "lora space" in warnings[0] and never_called in warnings[0]


def test_only_rank_zero_publishes_unless_all_ranks(pipeline, songs):
    quiet = attach(pipeline, rank=1, publisher=MemoryPublisher(), run="r")
    assert not quiet.active and hook_count(pipeline) == 0
    assert quiet.arm(0, 0, {}) is False
    quiet.close()
    batch = batch_of(songs, [0, 1, 2])
    tap, publisher = monitor(pipeline, rank=1, all_ranks=True)
    with tap:
        with tap.step(0, 0, batch):
            pipeline.preprocess(batch)
    assert {f.rank for f in publisher.frames} == {1}


def test_rank_defaults_to_the_environment(pipeline, monkeypatch):
    monkeypatch.setenv("RANK", "3")
    tap = attach(pipeline, publisher=MemoryPublisher(), run="r")
    assert (tap.rank, tap.active) == (3, False)
    tap.close()

