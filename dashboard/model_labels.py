"""What the prompt space is called for a run: "Prompt" (ACE-Step v1: text-encoder embeddings) or
"Condition" (ACE-Step 1.5: the condition encoder's packed lyrics, timbre and caption).

The collector says which model each run trains (``"model"`` in its snapshot and stats replies,
from the frames' header). ``register`` keeps the prompt stat box's label in step with the run shown.
"""
from __future__ import annotations

from typing import Any, Mapping

import dash
from acestep_viz.dashboard import ids
from acestep_viz.dashboard.cache import ReplyCache
from dash import Input, Output
from dash.exceptions import PreventUpdate

CONDITION_MODELS = frozenset({"acestep15"})  # runs whose prompt space holds condition-encoder output
STAT_LABELS = {"latent": "Latent Space", "lora": "LoRA Outputs", "prompt": "Prompt Space"}
PANEL_TITLES = {"latent": "Latent Space (Audio)", "lora": "LoRA Layer Outputs", "prompt": "Prompt Embeddings"}


def prompt_word(model: str | None) -> str:
    return "Condition" if model in CONDITION_MODELS else "Prompt"


def stat_label(space: str, model: str | None = None) -> str:
    """The stat box's label: "Prompt Space", or "Condition Space" for an ACE-Step 1.5 run."""
    return STAT_LABELS[space].replace("Prompt", prompt_word(model))


def panel_title(space: str, model: str | None = None) -> str:
    """The panel's title: "Prompt Embeddings", or "Condition Embeddings" for an ACE-Step 1.5 run."""
    return PANEL_TITLES[space].replace("Prompt", prompt_word(model))


def snapshot_model(snapshot: Mapping[str, Any] | None) -> str | None:
    model = (snapshot or {}).get("model")
    return model if isinstance(model, str) else None


def register(app: dash.Dash, cache: ReplyCache) -> None:
    from acestep_viz.dashboard.callbacks import snapshot_key  # callbacks imports figures, which imports this

    @app.callback(Output(ids.STAT_LABEL_PROMPT, "children"), Input(ids.VERSION_STORE, "data"))
    def label_prompt_space(seen):
        seen = seen or {}
        snapshot = cache.get(snapshot_key(seen.get("run"), seen.get("version")))
        if snapshot is None and seen.get("version") is not None:
            raise PreventUpdate  # fetched by another process: keep the label until this one has it
        return stat_label("prompt", snapshot_model(snapshot))
