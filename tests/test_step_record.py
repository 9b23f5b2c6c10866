"""Step records: the frames built from one training step, and their trip over the relay link."""
import json
import math

import numpy as np
import pytest
from acestep_viz.trainer_plugin.publisher import ErrorLog
from acestep_viz.trainer_plugin.step_record import (
    CAPTURE_FIELDS,
    LINK_VERSION,
    STEP_FIELDS,
    CaptureRows,
    StepRecord,
    build_frames,
    capture_header,
    decode_records,
    encode_records,
    encode_step,
    link_message,
    step_header,
)


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


def test_a_record_survives_the_link_with_vectors_and_metadata_intact():
    rec = record([CaptureRows("lora", "blocks.0", 3, vectors(2, 8), order=2),
                  CaptureRows("prompt", "te", 0, vectors(2, 5), keep=(0,))], loss=[math.nan])
    other = record([CaptureRows("latent", "enc", 0, vectors(1, 3, 5))], step=8, keys=["c"])
    back, back_other = decode_records(*encode_records([rec, other]))
    assert back_other.step == 8 and np.array_equal(back_other.captures[0].vectors, other.captures[0].vectors)
    assert [(c.space, c.label, c.first_key, c.order, c.keep) for c in back.captures] == [
        ("lora", "blocks.0", 3, 2, None), ("prompt", "te", 0, 0, (0,))]
    assert np.array_equal(back.captures[0].vectors, rec.captures[0].vectors)
    assert (back.keys, back.prompts, back.timesteps, back.step) == (rec.keys, rec.prompts, rec.timesteps, 7)
    assert math.isnan(back.loss[0])
    assert [f.ids for f in build_frames(back, ErrorLog())] == [f.ids for f in build_frames(rec, ErrorLog())]


def test_sums_on_the_link_arrive_as_vectors_scaled_flattened_and_divided_by_their_weights():
    sums = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)  # (rows, channels, height) summed over time
    one_row = np.arange(4, dtype=np.float32)  # a 1-D capture is one row
    masked = np.array([[[2.0, 4.0]], [[6.0, 8.0]], [[0.0, 0.0]]], dtype=np.float32)  # (rows, 1, dim) weighted sums
    mask = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=np.float32)  # the last row has nothing unmasked
    step = step_header("r", 0, 3, 0, ["a", "b", "c"], None, None, None, None, 0.0,
                       [capture_header("latent", "enc", 0, sums.shape, 0, None, scale=0.25),
                        capture_header("prompt", "te", 0, one_row.shape, 1, None),
                        capture_header("prompt", "te2", 0, masked.shape, 2, None, scale=3.0, weights=3)])
    [back] = decode_records(*link_message([encode_step(step, [sums, one_row, masked, mask])]))
    assert np.array_equal(back.captures[0].vectors, sums.reshape(2, 6) * 0.25)
    assert np.array_equal(back.captures[1].vectors, one_row.reshape(1, 4))
    assert np.array_equal(back.captures[2].vectors, [[3.0, 6.0], [18.0, 24.0], [0.0, 0.0]])


def header_of(rec: StepRecord) -> dict:
    """The first step's header, as a mangle receives it (an object: ``relink`` makes it a list again)."""
    step = json.loads(encode_records([rec])[0])["steps"][0]
    return {**dict(zip(STEP_FIELDS, step)), "captures": step[len(STEP_FIELDS):]}


def with_capture(step: dict, **changes) -> dict:
    """The step with its first capture's fields changed."""
    fields = {**dict(zip(CAPTURE_FIELDS, step["captures"][0])), **changes}
    return {**step, "captures": [[fields[name] for name in CAPTURE_FIELDS]]}


def relink(step: dict) -> bytes:
    return json.dumps({"v": LINK_VERSION, "steps": [[step[name] for name in STEP_FIELDS] + step["captures"]]}).encode()


@pytest.mark.parametrize("mangle, message", [
    (lambda h, p: (b"not json", p), "unreadable"),
    (lambda h, p: (json.dumps({"v": 99, "steps": [h]}).encode(), p), "version"),
    (lambda h, p: (json.dumps({"v": LINK_VERSION, "steps": h}).encode(), p), "steps"),
    (lambda h, p: (json.dumps({"v": LINK_VERSION, "steps": [h]}).encode(), p), "a link step"),
    (lambda h, p: (json.dumps({"v": LINK_VERSION, "steps": [list(h.values())[:5]]}).encode(), p), "a link step"),
    (lambda h, p: (relink(h), p.tobytes()[:-4]), "payload"),
    (lambda h, p: (relink(with_capture(h, rows=50)), p), "fit"),
    (lambda h, p: (relink(with_capture(h, space="video")), p), "space"),
    (lambda h, p: (relink(with_capture(h, keep=[9])), p), "keep"),
    (lambda h, p: (relink(with_capture(h, weights=0)), p), "weights"),
    (lambda h, p: (relink(with_capture(h, weights=3)), p), "fit"),
    (lambda h, p: (relink({**h, "captures": [h["captures"][0][:-1]]}), p), "list of"),
    (lambda h, p: (relink(with_capture(h, scale="2")), p), "scale"),
    (lambda h, p: (relink(with_capture(h, scale=math.inf)), p), "finite"),
    (lambda h, p: (relink({**h, "step": "7"}), p), "step"),
    (lambda h, p: (relink({**h, "keys": [1, 2]}), p), "keys"),
])
def test_a_malformed_link_message_is_a_value_error(mangle, message):
    rec = record([CaptureRows("lora", "l", 0, vectors(2, 4))])
    header, payload = mangle(header_of(rec), encode_records([rec])[1])
    with pytest.raises(ValueError, match=message):
        decode_records(header, payload)
