"""The twin's LightningModule, shaped like ACE-Step's `trainer.py` Pipeline.

Same attributes (`transformers`, `dcae`, `text_encoder_model`, `text_tokenizer`), same call
order in a training step (`plot_step` first, then `preprocess`, then the checkpointed
transformer forward) and the same flow-matching loss, at a size that trains on a laptop CPU.
"""
from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from .data import LYRIC_VOCAB_SIZE, SyntheticSongs, collate
from .twin import MusicDCAE, TwinTransformer, WordTokenizer, add_lora, build_text_encoder

TEXT_VOCAB_SIZE = 512
TEXT_DIM = 64
# Measured on this encoder over the synthetic songs, so latents come out roughly zero-mean, unit-scale.
LATENT_SHIFT, LATENT_SCALE = -0.01, 16.0


def build_modules(adapter_name: str, sample_rate: int, seed: int) -> dict:
    """Every sub-model, randomly initialised from `seed` without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        dcae = MusicDCAE(sample_rate=sample_rate, shift_factor=LATENT_SHIFT, scale_factor=LATENT_SCALE)
        text_encoder = build_text_encoder(TEXT_VOCAB_SIZE, TEXT_DIM)
        transformer = TwinTransformer(text_dim=TEXT_DIM, lyric_vocab_size=LYRIC_VOCAB_SIZE)
        transformer = add_lora(transformer, adapter_name=adapter_name)
    return {"dcae": dcae, "text_encoder": text_encoder, "transformer": transformer}


class FlowMatchSchedule:
    """Shifted flow-matching noise levels: sigma(u) = shift * u / (1 + (shift - 1) * u), timestep = sigma * T."""

    def __init__(self, num_train_timesteps: int = 1000, shift: float = 3.0):
        self.T = num_train_timesteps
        self.shift = shift

    def sigma(self, u: torch.Tensor) -> torch.Tensor:
        return self.shift * u / (1 + (self.shift - 1) * u)

    def sample_timesteps(self, bsz: int, logit_mean: float = 0.0, logit_std: float = 1.0) -> torch.Tensor:
        """Logit-normal draw (SD3 section 3.1), quantised to the T training timesteps."""
        u = torch.sigmoid(torch.normal(logit_mean, logit_std, size=(bsz,)))
        index = (u * self.T).long().clamp(0, self.T - 1)
        return self.sigma((index + 1).float() / self.T) * self.T

    def inference_sigmas(self, steps: int) -> torch.Tensor:
        return self.sigma(torch.linspace(1.0, 0.0, steps + 1))


class Pipeline(pl.LightningModule):
    def __init__(self, learning_rate: float = 1e-3, weight_decay: float = 1e-2, every_plot_step: int = 25,
                 shift: float = 3.0, T: int = 1000, warmup_steps: int = 10, max_steps: int = 200,
                 adapter_name: str = "lora_adapter", batch_size: int = 2, n_clips: int = 48, repeat_count: int = 2,
                 sample_rate: int = 4000, infer_steps: int = 3, guidance_scale: float = 3.0, seed: int = 0):
        super().__init__()
        self.save_hyperparameters()
        self.scheduler = FlowMatchSchedule(T, shift)
        modules = build_modules(adapter_name, sample_rate, seed)
        self.transformers = modules["transformer"]
        self.transformers.enable_gradient_checkpointing()
        self.adapter_name = adapter_name
        # Frozen and in eval mode, as from_pretrained leaves them in the real trainer.
        self.dcae = modules["dcae"].requires_grad_(False).eval()
        self.text_encoder_model = modules["text_encoder"].requires_grad_(False).eval()
        self.text_tokenizer = WordTokenizer(TEXT_VOCAB_SIZE)
        self.plot_steps: list[int] = []  # global steps at which plot_step ran an evaluation

    # ------------------------------------------------------------------ conditioning

    def get_text_embeddings(self, texts, device, text_max_length: int = 256):
        inputs = self.text_tokenizer(texts, return_tensors="pt", padding=True, truncation=True,
                                     max_length=text_max_length)
        inputs = {key: value.to(device) for key, value in inputs.items()}
        with torch.no_grad():
            outputs = self.text_encoder_model(**inputs)
        return outputs.last_hidden_state, inputs["attention_mask"]

    @staticmethod
    def cfg_keep(bsz: int, p_drop: float, device) -> torch.Tensor:
        """Classifier-free-guidance dropout: per sample, 1 keeps the condition, 0 zeroes it."""
        return (torch.rand(bsz, device=device) >= p_drop).long()

    def preprocess(self, batch: dict, train: bool = True):
        target_wavs = batch["target_wavs"]
        dtype, device = target_wavs.dtype, target_wavs.device
        text_states, text_mask = self.get_text_embeddings(batch["prompts"], device)
        text_states = text_states.to(dtype)
        target_latents, latent_lengths = self.dcae.encode(target_wavs, batch["wav_lengths"])
        frames = torch.arange(target_latents.shape[-1], device=device)
        attention_mask = (frames[None] < latent_lengths[:, None]).to(dtype)
        speaker_embs = batch["speaker_embs"].to(dtype)
        lyric_ids, lyric_mask = batch["lyric_token_ids"], batch["lyric_masks"]
        if train:
            bsz = target_wavs.shape[0]
            text_states = text_states * self.cfg_keep(bsz, 0.15, device).to(dtype)[:, None, None]
            speaker_embs = speaker_embs * self.cfg_keep(bsz, 0.5, device).to(dtype)[:, None]
            lyric_keep = self.cfg_keep(bsz, 0.15, device)[:, None]
            lyric_ids, lyric_mask = lyric_ids * lyric_keep, lyric_mask * lyric_keep
        return (batch["keys"], target_latents, attention_mask, text_states, text_mask, speaker_embs,
                lyric_ids, lyric_mask, None, None)  # no MERT / mHuBERT states in the twin

    # ------------------------------------------------------------------ training

    def run_step(self, batch: dict, batch_idx: int):
        self.plot_step(batch, batch_idx)
        (keys, target, attention_mask, text_states, text_mask, speaker_embs, lyric_ids, lyric_mask,
         _mert, _mhubert) = self.preprocess(batch)
        bsz = target.shape[0]
        noise = torch.randn_like(target)
        timesteps = self.scheduler.sample_timesteps(bsz).to(target.device)
        sigmas = (timesteps / self.scheduler.T).to(target.dtype).view(-1, 1, 1, 1)
        noisy = sigmas * noise + (1.0 - sigmas) * target
        output = self.transformers(hidden_states=noisy, attention_mask=attention_mask,
                                   encoder_text_hidden_states=text_states, text_attention_mask=text_mask,
                                   speaker_embeds=speaker_embs, lyric_token_idx=lyric_ids, lyric_mask=lyric_mask,
                                   timestep=timesteps.to(target.dtype), ssl_hidden_states=[])
        # Preconditioning as in EDM section 5: the model predicts a velocity, compare in x0 space.
        model_pred = output.sample * (-sigmas) + noisy
        mask = attention_mask[:, None, None, :].expand_as(target)
        loss = (((model_pred - target) ** 2 * mask).flatten(1).sum(1) / mask.flatten(1).sum(1)).mean()
        self.log("train/denoising_loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=bsz)
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=bsz)
        return loss

    def training_step(self, batch: dict, batch_idx: int):
        return self.run_step(batch, batch_idx)

    def configure_optimizers(self):
        params = [p for p in self.transformers.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=self.hparams.learning_rate,
                                      weight_decay=self.hparams.weight_decay, betas=(0.8, 0.9))
        warmup, total = self.hparams.warmup_steps, self.hparams.max_steps

        def lr_lambda(step: int) -> float:
            if step < warmup:
                return step / max(1, warmup)
            return max(0.0, 1.0 - (step - warmup) / max(1, total - warmup))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
        return [optimizer], [{"scheduler": scheduler, "interval": "step"}]

    def train_dataloader(self):
        dataset = SyntheticSongs(n_clips=self.hparams.n_clips, sample_rate=self.hparams.sample_rate,
                                 seed=self.hparams.seed, repeat_count=self.hparams.repeat_count)
        generator = torch.Generator().manual_seed(self.hparams.seed)
        return DataLoader(dataset, batch_size=self.hparams.batch_size, shuffle=True, num_workers=0,
                          collate_fn=collate, generator=generator)

    # ------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def diffusion_process(self, frame_length: int, encoder_text_hidden_states, text_attention_mask,
                          speaker_embds, lyric_token_ids, lyric_mask, infer_steps: int = 3,
                          guidance_scale: float = 3.0, generator: torch.Generator | None = None):
        """Euler sampling with classifier-free guidance: conditioned and unconditioned halves in one batch."""
        device, dtype = encoder_text_hidden_states.device, encoder_text_hidden_states.dtype
        bsz = encoder_text_hidden_states.shape[0]
        latents = torch.randn(bsz, 8, 16, frame_length, generator=generator).to(device, dtype)
        attention_mask = torch.ones(2 * bsz, frame_length, device=device, dtype=dtype)
        def with_unconditioned(x):
            return torch.cat([x, torch.zeros_like(x)])

        conditions = dict(
            encoder_text_hidden_states=with_unconditioned(encoder_text_hidden_states),
            text_attention_mask=torch.cat([text_attention_mask] * 2),
            speaker_embeds=with_unconditioned(speaker_embds),
            lyric_token_idx=with_unconditioned(lyric_token_ids),
            lyric_mask=with_unconditioned(lyric_mask),
        )
        sigmas = self.scheduler.inference_sigmas(infer_steps).to(device)
        for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
            timestep = (sigma * self.scheduler.T).expand(2 * bsz).to(dtype)
            velocity = self.transformers(hidden_states=torch.cat([latents] * 2), attention_mask=attention_mask,
                                         timestep=timestep, **conditions).sample
            cond, uncond = velocity.chunk(2)
            latents = latents + (sigma_next - sigma) * (uncond + guidance_scale * (cond - uncond))
        return latents

    def predict_step(self, batch: dict):
        (keys, target_latents, _mask, text_states, text_mask, speaker_embs, lyric_ids, lyric_mask,
         _mert, _mhubert) = self.preprocess(batch, train=False)
        generator = torch.Generator().manual_seed(1234)
        pred_latents = self.diffusion_process(target_latents.shape[-1], text_states, text_mask, speaker_embs,
                                              lyric_ids, lyric_mask, infer_steps=self.hparams.infer_steps,
                                              guidance_scale=self.hparams.guidance_scale, generator=generator)
        return {"keys": keys, "prompts": batch["prompts"], "target_latents": target_latents,
                "pred_latents": pred_latents}

    def plot_step(self, batch: dict, batch_idx: int):
        if self.global_step % self.hparams.every_plot_step != 0 or self.global_rank != 0:
            return None
        results = self.predict_step(batch)
        self.plot_steps.append(self.global_step)
        return results
