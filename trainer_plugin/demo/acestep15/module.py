"""The training module of the ACE-Step 1.5 twin, shaped like 1.5's ``PreprocessedLoRAModule``.

``.model`` is the generation model; LoRA goes into its ``decoder`` with peft's ``get_peft_model``
and the target list of 1.5's UIs (bare suffixes: both attentions of every layer). ``training_step``
reads the preprocessed tensors from the batch, swaps the condition for ``null_condition_emb`` on a
random share of the clips (CFG dropout, on its own copy), samples logit-normal timesteps (a local,
passed to the DiT as ``timestep=``), and returns one batch-mean flow-matching loss.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from torch import nn

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


def inject_lora(model: nn.Module, rank: int = 8, alpha: int = 16, dropout: float = 0.0) -> nn.Module:
    """Freeze the generation model and wrap its decoder with peft LoRA; returns the model."""
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(LORA_TARGETS),
                        bias="none")
    model.decoder = get_peft_model(model.decoder, config)
    return model


def apply_cfg_dropout(condition: torch.Tensor, null_condition: torch.Tensor, ratio: float) -> torch.Tensor:
    """A copy of ``condition`` (B, L, D) with each clip's replaced by ``null_condition`` with probability ``ratio``."""
    dropped = torch.rand(condition.shape[0], device=condition.device) < ratio
    return torch.where(dropped[:, None, None], null_condition.expand_as(condition), condition)


def sample_timesteps(batch_size: int, mu: float = -0.4, sigma: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logit-normal t in (0, 1) (t = 1 is pure noise); r = t."""
    t = torch.sigmoid(torch.randn(batch_size) * sigma + mu)
    return t, t


class PreprocessedLoRAModule(nn.Module):
    def __init__(self, model: nn.Module, cfg_ratio: float = 0.15, lora_rank: int = 8, lora_alpha: int = 16):
        super().__init__()
        self.model = inject_lora(model, lora_rank, lora_alpha)
        self.cfg_ratio = cfg_ratio
        self.training_losses: list[float] = []

    def training_step(self, batch: dict, record_loss: bool = True) -> torch.Tensor:
        target_latents = batch["target_latents"]
        attention_mask = batch["attention_mask"]
        encoder_hidden_states = batch["encoder_hidden_states"]
        encoder_attention_mask = batch["encoder_attention_mask"]
        context_latents = batch["context_latents"]
        noise, data = torch.randn_like(target_latents), target_latents
        if self.cfg_ratio > 0:
            encoder_hidden_states = apply_cfg_dropout(encoder_hidden_states, self.model.null_condition_emb,
                                                      self.cfg_ratio)
        t, r = sample_timesteps(target_latents.shape[0])
        t_ = t[:, None, None]
        noisy = t_ * noise + (1.0 - t_) * data
        prediction = self.model.decoder(hidden_states=noisy, timestep=t, timestep_r=r, attention_mask=attention_mask,
                                        encoder_hidden_states=encoder_hidden_states,
                                        encoder_attention_mask=encoder_attention_mask,
                                        context_latents=context_latents)[0]
        per_clip = F.mse_loss(prediction, noise - data, reduction="none").mean(dim=(1, 2))
        loss = per_clip.mean().float()
        if record_loss:
            self.training_losses.append(loss.item())
        return loss
