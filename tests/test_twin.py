"""The ACE-Step twin behaves like the real trainer where the monitor's hooks can tell."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("pytorch_lightning")

import pytorch_lightning as pl  # noqa: E402
from acestep_viz.trainer_plugin.demo import SyntheticSongs, build_pipeline, collate, run_demo  # noqa: E402
from peft.tuners.tuners_utils import BaseTunerLayer  # noqa: E402
from transformers.utils import ModelOutput  # noqa: E402


@pytest.fixture(scope="module")
def pipeline():
    return build_pipeline()


@pytest.fixture(scope="module")
def batch():
    songs = SyntheticSongs()
    return collate([songs[i] for i in range(3)])


def record_calls(module, calls, with_kwargs=False):
    if with_kwargs:
        return module.register_forward_hook(lambda m, args, kwargs, out: calls.append((args, kwargs, out)),
                                            with_kwargs=True)
    return module.register_forward_hook(lambda m, args, out: calls.append(out))


def test_dcae_encoder_fires_once_per_clip_and_the_wrapper_never(pipeline, batch):
    encoder_calls, wrapper_calls = [], []
    handles = [record_calls(pipeline.dcae.dcae.encoder, encoder_calls),
               record_calls(pipeline.dcae, wrapper_calls), record_calls(pipeline.dcae.dcae, wrapper_calls)]
    try:
        latents = pipeline.preprocess(batch, train=False)[1]
    finally:
        for h in handles:
            h.remove()
    assert wrapper_calls == []
    assert len(encoder_calls) == 3
    frames = [out.shape[-1] for out in encoder_calls]
    assert all(out.shape[:3] == (1, 8, 16) for out in encoder_calls)
    assert len(set(frames)) == 3, "clips of different lengths give latents of different lengths"
    assert frames == [math.ceil(n / 512) for n in batch["wav_lengths"].tolist()]
    assert latents.shape == (3, 8, 16, max(frames))


def test_text_encoder_is_called_with_keywords_and_returns_a_model_output(pipeline, batch):
    calls = []
    handle = record_calls(pipeline.text_encoder_model, calls, with_kwargs=True)
    try:
        states, mask = pipeline.get_text_embeddings(batch["prompts"], torch.device("cpu"))
    finally:
        handle.remove()
    (args, kwargs, out), = calls
    assert args == ()
    assert set(kwargs) == {"input_ids", "attention_mask"}
    assert isinstance(out, ModelOutput) and out.last_hidden_state is states
    assert states.shape[:2] == mask.shape == kwargs["attention_mask"].shape
    assert states.shape[-1] == pipeline.text_encoder_model.config.d_model


def test_lora_sits_on_acestep_targets_only(pipeline):
    modules = dict(pipeline.transformers.named_modules())
    for path in ("transformer_blocks.0.attn.to_out.0", "transformer_blocks.3.attn.to_q",
                 "transformer_blocks.1.cross_attn.to_out.0", "transformer_blocks.2.cross_attn.to_v",
                 "speaker_embedder", "lyric_encoder.encoders.5.self_attn.linear_k"):
        assert isinstance(modules[path], BaseTunerLayer), path
    for path in ("transformer_blocks.0.cross_attn.to_add_out", "transformer_blocks.0.cross_attn.add_q_proj",
                 "transformer_blocks.0.cross_attn.add_k_proj", "transformer_blocks.0.cross_attn.add_v_proj",
                 "genre_embedder", "lyric_encoder.encoders.0.self_attn.linear_out", "proj_in"):
        assert not isinstance(modules[path], BaseTunerLayer), path
    trainable = [name for name, p in pipeline.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)


def test_gradient_checkpointing_refires_block_hooks_during_backward(pipeline, batch):
    (_, latents, mask, text, text_mask, speaker, lyrics, lyric_mask, _, _) = pipeline.preprocess(batch)
    layer = pipeline.transformers.transformer_blocks[0].attn.to_out[0]
    calls = []
    handle = record_calls(layer, calls)
    pipeline.transformers.train()
    try:
        out = pipeline.transformers(hidden_states=latents, attention_mask=mask, encoder_text_hidden_states=text,
                                    text_attention_mask=text_mask, speaker_embeds=speaker,
                                    lyric_token_idx=lyrics, lyric_mask=lyric_mask, timestep=torch.full((3,), 500.0))
        assert len(calls) == 1
        out.sample.square().mean().backward()
        assert len(calls) == 2, "non-reentrant checkpointing recomputes the block in backward"
    finally:
        handle.remove()
        pipeline.transformers.zero_grad(set_to_none=True)
    assert out.proj_losses == [] and out.sample.shape == latents.shape


class Grab(pl.Callback):
    """Keeps the trained module and the LoRA weights before training."""

    def on_train_start(self, trainer, pl_module):
        self.module = pl_module
        self.lora_b = pl_module.transformers.transformer_blocks[0].attn.to_q.lora_B
        self.before = {k: v.detach().clone() for k, v in self.lora_b.state_dict().items()}


def test_trainer_fits_three_steps_on_cpu():
    grab = Grab()
    summary = run_demo(steps=3, monitor=False, batch_size=2, callbacks_extra=[grab])
    assert summary["steps"] == 3
    assert math.isfinite(summary["final_loss"])
    assert summary["plot_steps"] == [0]
    assert summary["run"].startswith("demo-")
    assert not hasattr(grab.module, "last_timesteps")  # the real Pipeline keeps timesteps in a local too
    after = grab.lora_b.state_dict()
    assert any(not torch.equal(after[k], v) for k, v in grab.before.items()), "LoRA weights trained"


def test_dataset_is_deterministic_and_genre_structured():
    a, b = SyntheticSongs(seed=3), SyntheticSongs(seed=3)
    assert torch.equal(a[7]["wav"], b[7]["wav"]) and a[7]["prompt"] == b[7]["prompt"]
    assert a[1]["key"] == "metal_00" and "heavy metal" in a[1]["prompt"]
    items = [a[i] for i in range(4)]
    batch = collate(items)
    assert set(batch) == {"keys", "target_wavs", "wav_lengths", "prompts", "lyric_token_ids", "lyric_masks",
                          "speaker_embs"}
    assert batch["target_wavs"].shape == (4, 2, int(batch["wav_lengths"].max()))
    assert batch["lyric_masks"].sum(1).tolist() == [len(it["lyric_token_ids"]) for it in items]
    assert batch["speaker_embs"].shape == (4, 512)


def test_a_clip_comes_back_with_other_prompt_texts_like_acesteps_dataset():
    """Text2MusicDataset shuffles a clip's tags and picks among its recaptions on every visit;
    convert2hf_dataset repeats each clip repeat_count times under the same key. The audio stays."""
    songs = SyntheticSongs(n_clips=6, repeat_count=3)
    assert len(songs) == 18
    visits = [songs[i] for i in (1, 7, 13, 1, 1, 1, 1, 1)]  # clip 1 eight times
    assert {v["key"] for v in visits} == {"metal_00"}
    assert all(torch.equal(v["wav"], visits[0]["wav"]) for v in visits)
    texts = {v["prompt"] for v in visits}
    assert len(texts) > 2
    shuffled = [t for t in texts if t.count(", ") >= 4]
    assert shuffled and all(set(t.split(", ")) == set(shuffled[0].split(", ")) for t in shuffled)
    assert any(", " not in t for t in texts)  # a recaption was picked
    again = SyntheticSongs(n_clips=6, repeat_count=3)
    assert [again[i]["prompt"] for i in (1, 7, 13, 1, 1, 1, 1, 1)] == [v["prompt"] for v in visits]


def test_prompt_texts_keep_genre_structure_across_visits():
    """The demo's prompt map still shows genres although each visit draws another text."""
    pipeline = build_pipeline()
    songs = SyntheticSongs(n_clips=24, repeat_count=3)
    items = [songs[i] for i in range(len(songs))]
    texts, genres = [it["prompt"] for it in items], np.array([it["key"].split("_")[0] for it in items])
    with torch.no_grad():
        tokens = pipeline.text_tokenizer(texts, return_tensors="pt", padding=True)
        hidden = pipeline.text_encoder_model(**tokens).last_hidden_state
        mask = tokens["attention_mask"][..., None].float()
        vectors = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
    distances = ((vectors[:, None] - vectors[None]) ** 2).sum(-1)
    np.fill_diagonal(distances, np.inf)
    assert len(set(texts)) > 24  # clips came back with other texts
    assert (genres[distances.argmin(1)] == genres).mean() > 0.8  # nearest text: same genre
