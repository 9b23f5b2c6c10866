"""The demo twin with a progress file:
``python tests/demo_with_progress.py ENDPOINT STEPS RUN PROGRESS [on|off] [PACE_S]``.

Runs ``run_demo`` in this process with one extra Lightning callback that rewrites PROGRESS with
the number of finished training batches after each one, so a test can see the trainer stepping
while the collector is stopped or dead. PACE_S (default 0) is slept after each batch: a run that
must outlast a sequence of faults lasts long enough on a fast machine, as a real trainer's
second-long steps would. Prints the demo's summary as JSON on its last line, with
``max_rss_mb`` (this process's peak resident memory) added.
"""
from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pytorch_lightning as pl  # noqa: E402
from acestep_viz.trainer_plugin.demo import run_demo  # noqa: E402


class Progress(pl.Callback):
    def __init__(self, path: str, pace_s: float = 0.0):
        self.path = Path(path)
        self.pace_s = pace_s
        self.batches = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.batches += 1
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(str(self.batches))
        os.replace(tmp, self.path)  # readers never see a half-written number
        if self.pace_s:
            time.sleep(self.pace_s)


def main(endpoint: str, steps: str, run: str, progress: str, monitor: str = "on", pace_s: str = "0") -> int:
    summary = run_demo(endpoint=endpoint, steps=int(steps), run=run,
                       callbacks_extra=[Progress(progress, float(pace_s))], monitor=monitor != "off")
    summary["max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(summary, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:7]))
