import numpy as np
from acestep_viz.collector.buffers import SpaceBuffer
from acestep_viz.trainer_plugin.coalesce import coalesce

from acestep_viz.wire import Frame, decode, encode


def lora(step, micro=0, rows=2, run="r", dim=4):
    return Frame(run=run, space="lora", step=step, micro_batch=micro, ids=[f"c{i}" for i in range(rows)],
                 vectors=np.full((rows, dim), step, np.float16), meta=[{"layer": "l0", "loss": 0.5}] * rows,
                 sent_at=100.0 + step)


def test_a_backlog_becomes_one_frame_that_keeps_each_rows_step():
    merged = [frame for frame, _ in coalesce([lora(1), lora(2, micro=1), lora(3)])]
    assert len(merged) == 1
    frame = decode([bytes(p) for p in encode(merged[0])])
    assert frame.rows == 6 and frame.step == 3 and frame.sent_at == 101.0
    buf = SpaceBuffer("lora", 100)
    buf.add(frame)
    _, keys, meta = buf.snapshot()
    assert [(m["step"], m["micro_batch"]) for m in meta] == [(1, 0), (1, 0), (2, 1), (2, 1), (3, 0), (3, 0)]
    assert len(set(keys)) == 6 and all(m["loss"] == 0.5 for m in meta)


def test_frames_that_differ_stay_apart_and_in_order():
    latent = Frame(run="r", space="latent", step=2, ids=["c0"], vectors=np.zeros((1, 4), np.float16))
    frames = [lora(1), lora(2, run="other"), latent, lora(3, dim=8), lora(4, dim=8)]
    out = list(coalesce(frames))
    assert [(f.run, f.space, f.rows, n) for f, n in out] == [("r", "lora", 2, 1), ("other", "lora", 2, 1),
                                                            ("r", "latent", 1, 1), ("r", "lora", 4, 2)]


def test_row_cap_splits_large_backlogs():
    out = list(coalesce([lora(s, rows=3) for s in range(10)], max_rows=7))
    assert [(f.rows, n) for f, n in out] == [(6, 2)] * 5


def test_steps_of_interleaved_spaces_become_one_frame_per_space():
    def frozen(space, step):
        return Frame(run="r", space=space, step=step, ids=["c0", "c1"], vectors=np.full((2, 4), step, np.float16),
                     meta=[{"prompt": "rock"}] * 2)

    steps = [[frozen("prompt", s), frozen("latent", s), lora(s)] for s in range(3)]
    out = list(coalesce(frame for step in steps for frame in step))
    assert [(f.space, f.rows, n) for f, n in out] == [("prompt", 6, 3), ("latent", 6, 3), ("lora", 6, 3)]
    latent = decode([bytes(p) for p in encode(out[1][0])])
    assert latent.columns["step"] == [0, 0, 1, 1, 2, 2] and latent.vectors[:, 0].tolist() == [0, 0, 1, 1, 2, 2]
