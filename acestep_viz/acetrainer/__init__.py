"""The ACETrainer integration: a live embeddings tab in its web UI and the monitor in ACE-Step's trainer.py."""
