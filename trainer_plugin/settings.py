"""The trainer side's settings, declared once; ``EmbeddingMonitor`` resolves them in ``setup``.

Each is read from an explicit argument, else its ``ACESTEP_VIZ_<NAME>`` environment variable,
else the default. This module imports no torch, so the command line and docs/settings.md can list them cheaply.
"""
from __future__ import annotations

from acestep_viz.settings import Setting, at_least, one_of, parse_bool, parse_list, positive, zmq_endpoint
from acestep_viz.wire import DEFAULT_INGEST, run_name_problem

LORA_OUTPUTS = ("output", "delta", "both")


def _run_name(value) -> str | None:
    return None if value is None else run_name_problem(value)


ADAPTER_EVERY = Setting("adapter_every", 50, "Every N optimizer steps, send each LoRA layer's update size "
                        "||scale * B A|| / ||W|| (the dashboard's adapter chart and alerts); 0 turns it off.",
                        int, at_least(0))

STRICT = Setting("strict", False, "Make a misconfigured monitor (a bad setting, a module path not found, an invalid "
                 "endpoint) an error; by default it logs one warning and training goes on without the monitor.",
                 parse_bool)

TRAINER_SETTINGS = [
    Setting("enabled", True, "Capture embeddings during training; false turns the monitor off entirely.",
            parse_bool),
    Setting("endpoint", DEFAULT_INGEST,
            "ZeroMQ endpoint of the collector's ingest socket; the trainer connects to it.", str, zmq_endpoint),
    Setting("run", None, "Run name shown in the dashboard (no '/'); default: the logger's version or the start "
            "time.", str, _run_name),
    Setting("every_n_steps", 1, "Capture every Nth optimizer step (global_step % N == 0).", int, positive),
    ADAPTER_EVERY,
    Setting("lora_layers", (), "Comma-separated globs choosing LoRA layers for the lora space, e.g. "
            "'transformer_blocks.*.attn.to_out.0'; default: self-attention to_out.0 of the first, middle "
            "and last transformer block.", parse_list),
    Setting("lora_output", "output", "What the lora space records: 'output' (the LoRA layer's output), 'delta' "
            "(the adapter's own contribution) or 'both'.", str, one_of(*LORA_OUTPUTS)),
    Setting("autostart", False, "Start the sidecar (`acestep-viz up`, detached, loopback only, logging to "
            "<store>/sidecar.log) when no collector answers on ACESTEP_VIZ_COLLECTOR; a second run reuses it.",
            parse_bool),
    Setting("all_ranks", False, "With several GPUs (DDP), publish from every rank, not only rank 0.", parse_bool),
    Setting("curve_dir", None, "Folder with CurveZMQ keys made by `acestep-viz keys` (client.key_secret, server.key) "
            "for a collector started with --curve-dir; read by the publisher (argument: "
            "publisher_options={'curve_dir': ...}).", str),
    STRICT,
]

# `acestep-viz demo` (and `up --demo`): the trainer's endpoint and run, plus these.
DEMO_MODELS = ("acestep", "acestep15")
STEPS = Setting("steps", 1000, "training steps of the demo run", parse=int, check=positive)
MODEL = Setting("model", "acestep", "which twin the demo trains: 'acestep' (v1's trainer.py under a Lightning Trainer) "
                "or 'acestep15' (ACE-Step 1.5's Fabric loop)", str, one_of(*DEMO_MODELS))
LR = Setting("lr", 1e-3, "the demo's peak learning rate (AdamW; the twins' default 1e-3): 0 trains nothing (the "
             "adapter does not move), 0.02 or more makes the LoRA outputs collapse", parse=float, check=at_least(0))
AUDIO_DIR = Setting("audio_dir", None, "write the demo clips' audio into this folder as WAV files (created if "
                    "missing), for the dashboard's --audio-root; `up --demo` uses <store>/demo-audio", str)
COMPARE = Setting("compare", False, "train the twin twice, one run after the other, the second with 4x the learning "
                  "rate (--lr): two runs of the same clips (<run>-lr0.001, <run>-lr0.004 by default) for "
                  "the dashboard's \"Compare with\"", parse_bool)
DEMO_SETTINGS = (STEPS, MODEL, LR, AUDIO_DIR, COMPARE)
