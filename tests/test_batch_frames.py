"""A sender batch's records built at once: the same rows, ids and metadata as each step built alone and merged."""
import numpy as np
from acestep_viz.trainer_plugin.batch_frames import build_frames, chunk_frame, chunks, segments
from acestep_viz.trainer_plugin.coalesce import coalesce
from acestep_viz.trainer_plugin.publisher import ErrorLog
from acestep_viz.trainer_plugin.step_record import CaptureRows, StepRecord

from acestep_viz.wire import decode, encode


def sums(rows: int, dim: int, start: float) -> np.ndarray:
    return start + np.arange(rows * dim, dtype=np.float32).reshape(rows, dim) / 10


def step(number: int, micro_batch: int = 0, run: str = "r") -> StepRecord:
    """A step as the tap hands it over: latent rows per clip, a masked prompt, two scaled LoRA layers."""
    weights = np.array([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=np.float32)
    captures = [CaptureRows("latent", "enc", 0, sums(1, 4, number), scale=1 / 8),
                CaptureRows("prompt", "te", 0, sums(2, 6, number), weights=weights, keep=(1,) if number % 2 else None),
                CaptureRows("latent", "enc", 1, sums(1, 4, number + 0.5), scale=1 / 8),
                CaptureRows("lora", "blocks.0", 0, sums(2, 8, number), order=1, scale=2.0 / 16),
                CaptureRows("lora", "blocks.3", 0, sums(2, 8, -number), order=2, scale=0.5 / 16)]
    return StepRecord(run=run, rank=0, step=number, micro_batch=micro_batch, keys=["a", "b"],
                      prompts=["jazz", "rock"], captures=captures, loss=[0.5 + number],
                      timesteps=[100.0 * number, 900.0], sample_losses=None, sent_at=1000.0 + number)


def rows_of(frames) -> dict:
    """Per space, every row as the collector reads it: (id, its metadata, its vector)."""
    out: dict = {}
    for frame in frames:
        frame = decode([bytes(part) for part in encode(frame)])
        meta = frame.meta
        for row in range(frame.rows):
            values = {"step": frame.step, "micro_batch": frame.micro_batch, **meta[row]}
            out.setdefault(frame.space, []).append((frame.ids[row], values, frame.vectors[row].tolist()))
    return out


def test_a_batch_built_at_once_holds_the_rows_of_each_step_built_alone_then_merged():
    records = [step(1), step(2, micro_batch=1), step(3), step(4, run="other")]
    errors = ErrorLog()
    alone = [frame for record in records for frame in build_frames(record, errors)]
    merged_alone = [frame for frame, _ in coalesce(alone)]
    at_once = [(chunk_frame(chunk), len(chunk)) for chunk in chunks(s for r in records for s in segments(r, errors))]
    assert rows_of(frame for frame, _ in at_once) == rows_of(merged_alone)
    assert [(f.run, f.space, f.rows, n) for f, n in at_once] == [(f.run, f.space, f.rows, n) for f, n in
                                                                  coalesce(alone)]
    assert errors.as_dict() == {}


def test_sums_are_scaled_and_divided_by_their_mask_weights_row_by_row():
    [prompt] = [f for f in build_frames(step(2), ErrorLog()) if f.space == "prompt"]
    expected = sums(2, 6, 2) / np.array([[2.0], [4.0]])
    np.testing.assert_allclose(prompt.vectors.astype(np.float32), expected, rtol=1e-3)
    [lora] = [f for f in build_frames(step(2), ErrorLog()) if f.space == "lora"]
    expected = np.concatenate([sums(2, 8, 2) * 2.0 / 16, sums(2, 8, -2) * 0.5 / 16])
    np.testing.assert_allclose(lora.vectors.astype(np.float32), expected, rtol=1e-3)
    assert lora.columns["layer"] == ["blocks.0", "blocks.0", "blocks.3", "blocks.3"]
    assert lora.columns["timestep"] == [200.0, 900.0, 200.0, 900.0] and lora.columns["loss"] == [2.5] * 4


def test_a_merged_frame_keeps_each_rows_step_and_is_cut_between_steps_at_the_row_cap():
    batch = [s for number in range(5) for s in segments(step(number), ErrorLog()) if s.space == "lora"]
    cut = list(chunks(batch, max_rows=9))  # four rows a step: two steps fit, never a step split
    assert [len(chunk) for chunk in cut] == [2, 2, 1]
    frame = chunk_frame(cut[1])
    assert frame.columns["step"] == [2] * 4 + [3] * 4 and frame.step == 3 and frame.sent_at == 1002.0
    assert frame.ids == ["a", "b", "a", "b"] * 2


def test_frozen_rows_left_out_by_keep_take_their_weights_with_them():
    [prompt] = [f for f in build_frames(step(1), ErrorLog()) if f.space == "prompt"]
    assert prompt.ids == ["b"] and prompt.columns["prompt"] == ["rock"]
    np.testing.assert_allclose(prompt.vectors.astype(np.float32), sums(2, 6, 1)[1:] / 4.0, rtol=1e-3)
