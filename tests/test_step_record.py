"""Step records: the frames built from one training step, and the vectors made from pooled sums."""
import numpy as np
from acestep_viz.trainer_plugin.batch_frames import build_frames
from acestep_viz.trainer_plugin.publisher import ErrorLog
from acestep_viz.trainer_plugin.step_record import CaptureRows, StepRecord, scaled_rows


def vectors(rows: int, dim: int, start: float = 0.0) -> np.ndarray:
    return (start + np.arange(rows * dim, dtype=np.float32).reshape(rows, dim) / 100)


def record(captures, **fields) -> StepRecord:
    defaults = dict(run="r", rank=0, step=7, micro_batch=1, keys=["a", "b"], prompts=["jazz", "rock"],
                    loss=[0.5], timesteps=[100.0, 900.0], sample_losses=[0.25, 0.75], sent_at=1.0)
    return StepRecord(captures=captures, **{**defaults, **fields})


def frame_of(frames, space):
    [frame] = [f for f in frames if f.space == space]
    return frame


def test_one_frame_per_space_with_rows_in_firing_order_and_their_metadata():
    rec = record([CaptureRows("latent", "enc", 0, vectors(1, 4)), CaptureRows("latent", "enc", 1, vectors(1, 4, 1)),
                  CaptureRows("lora", "blocks.0", 0, vectors(2, 8), order=1),
                  CaptureRows("lora", "blocks.3", 0, vectors(2, 8, 2), order=2)])
    frames = build_frames(rec, ErrorLog())
    latent, lora = frame_of(frames, "latent"), frame_of(frames, "lora")
    assert latent.ids == ["a", "b"] and latent.vectors.dtype == np.float16
    assert np.allclose(latent.vectors[1], vectors(1, 4, 1)[0], atol=1e-3)
    assert latent.columns == {"prompt": ["jazz", "rock"], "loss": [0.25, 0.75]}
    assert lora.ids == ["a", "b", "a", "b"]
    assert lora.columns["layer"] == ["blocks.0", "blocks.0", "blocks.3", "blocks.3"]
    assert lora.columns["timestep"] == [100.0, 900.0, 100.0, 900.0]
    assert (lora.step, lora.micro_batch, lora.run) == (7, 1, "r")


def test_rows_left_out_by_keep_are_not_sent_and_a_space_with_none_has_no_frame():
    rec = record([CaptureRows("prompt", "te", 0, vectors(2, 4), keep=(1,)),
                  CaptureRows("latent", "enc", 0, vectors(1, 4), keep=())])
    [prompt] = build_frames(rec, ErrorLog())
    assert prompt.space == "prompt" and prompt.ids == ["b"]
    assert np.allclose(prompt.vectors[0], vectors(2, 4)[1], atol=1e-3)


def test_the_first_declared_module_sets_a_space_size_and_odd_sizes_are_reported():
    errors = ErrorLog()
    rec = record([CaptureRows("lora", "odd", 0, vectors(2, 3), order=1),
                  CaptureRows("lora", "first", 0, vectors(2, 8), order=0)])
    [lora] = build_frames(rec, errors)
    assert lora.vectors.shape == (2, 8) and lora.columns["layer"] == ["first", "first"]
    assert errors.as_dict() == {"dim_mismatch": 1}


def test_without_clip_keys_rows_get_step_ids_and_values_too_large_for_float16_are_clamped():
    rec = record([CaptureRows("lora", "l", 0, np.full((1, 2), 1e9, dtype=np.float32))], keys=None)
    [lora] = build_frames(rec, ErrorLog())
    assert lora.ids == ["step7-mb1-row0"] and np.isfinite(lora.vectors).all()


def test_pooled_sums_become_vectors_scaled_flattened_and_divided_by_their_weights():
    sums = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)  # (rows, channels, height) summed over time
    one_row = np.arange(4, dtype=np.float32)  # a 1-D capture is one row
    masked = np.array([[[2.0, 4.0]], [[6.0, 8.0]], [[0.0, 0.0]]], dtype=np.float32)  # (rows, 1, dim) weighted sums
    mask = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=np.float32)  # the last row has nothing unmasked
    assert np.array_equal(scaled_rows(sums, 2, 0.25), sums.reshape(2, 6) * 0.25)
    assert np.array_equal(scaled_rows(one_row, 1, 1.0), one_row.reshape(1, 4))
    assert np.array_equal(scaled_rows(masked, 3, 3.0, mask), [[3.0, 6.0], [18.0, 24.0], [0.0, 0.0]])
