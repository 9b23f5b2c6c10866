import numpy as np
import pytest
from acestep_viz.collector.buffers import BufferReject, SpaceBuffer

from acestep_viz.wire import Frame


def frame(space, ids, step=0, dim=4, layer=None, value=1.0):
    meta = [{"layer": layer, "prompt": f"p-{i}"} if layer else {"prompt": f"p-{i}"} for i in ids]
    return Frame(run="r", space=space, step=step, ids=list(ids), meta=meta,
                 vectors=np.full((len(ids), dim), value, np.float16))


def test_frozen_space_keeps_one_row_per_clip():
    buf = SpaceBuffer("latent", capacity=100)
    assert buf.add(frame("latent", ["a", "b"], step=0)) == 2
    assert buf.add(frame("latent", ["a", "b", "c"], step=5)) == 1
    vectors, keys, meta = buf.snapshot()
    assert keys == ["a", "b", "c"] and vectors.shape == (3, 4)
    assert meta[0]["step"] == 5  # metadata refreshed


def test_lora_space_keeps_every_step_and_layer():
    buf = SpaceBuffer("lora", capacity=100)
    buf.add(frame("lora", ["a"], step=1, layer="l0"))
    buf.add(frame("lora", ["a"], step=1, layer="l1"))
    buf.add(frame("lora", ["a"], step=2, layer="l0"))
    assert buf.size == 3


def test_ring_drops_the_oldest_rows_first():
    buf = SpaceBuffer("lora", capacity=3)
    for step in range(5):
        buf.add(frame("lora", ["a"], step=step, layer="l0", value=step))
    vectors, keys, meta = buf.snapshot()
    assert [m["step"] for m in meta] == [2, 3, 4]
    assert vectors[:, 0].tolist() == [2.0, 3.0, 4.0]
    assert buf.received == 5


def test_dimension_change_is_rejected_without_mixing():
    buf = SpaceBuffer("lora", capacity=10)
    buf.add(frame("lora", ["a"], dim=4, layer="l0"))
    with pytest.raises(BufferReject) as err:
        buf.add(frame("lora", ["b"], dim=8, layer="l0"))
    assert err.value.reason == "dim_mismatch" and buf.size == 1


def test_clear_empties_and_accepts_a_new_dimension():
    buf = SpaceBuffer("prompt", capacity=10)
    buf.add(frame("prompt", ["a"], dim=4))
    gen = buf.generation
    buf.clear()
    assert buf.size == 0 and buf.generation != gen
    buf.add(frame("prompt", ["a"], dim=8))
    assert buf.snapshot()[0].shape == (1, 8)


def lora_rows(start, count, layer="l0"):
    """``count`` LoRA rows of clips c<start>.., each row's vector filled with its clip number."""
    clips = range(start, start + count)
    return Frame(run="r", space="lora", step=0, ids=[f"c{i}" for i in clips], meta=[{"layer": layer}] * count,
                 vectors=np.array([[i] * 4 for i in clips], np.float16))


def test_a_frame_that_wraps_around_the_ring_keeps_rows_and_metadata_together():
    buf = SpaceBuffer("lora", capacity=5)
    assert buf.add(lora_rows(0, 3)) == 3
    assert buf.add(lora_rows(3, 4)) == 4
    vectors, keys, meta = buf.snapshot()
    assert [m["id"] for m in meta] == ["c2", "c3", "c4", "c5", "c6"]
    assert vectors[:, 0].tolist() == [2, 3, 4, 5, 6] and len(set(keys)) == 5 and buf.size == 5


def test_a_frame_larger_than_the_buffer_keeps_its_newest_rows():
    buf = SpaceBuffer("lora", capacity=3)
    buf.add(lora_rows(0, 7))
    vectors, _, meta = buf.snapshot()
    assert [m["id"] for m in meta] == ["c4", "c5", "c6"] and vectors[:, 0].tolist() == [4, 5, 6]


def test_resize_keeps_the_newest_rows_with_their_metadata():
    buf = SpaceBuffer("lora", capacity=10)
    buf.add(lora_rows(0, 6))
    buf.resize(4)
    buf.add(lora_rows(6, 1))
    vectors, _, meta = buf.snapshot()
    assert [m["id"] for m in meta] == ["c3", "c4", "c5", "c6"] and vectors[:, 0].tolist() == [3, 4, 5, 6]


def test_a_refreshed_row_shows_its_new_metadata_in_the_next_snapshot():
    buf = SpaceBuffer("prompt", capacity=10)
    buf.add(frame("prompt", ["a", "b"], step=1))
    assert [m["step"] for m in buf.snapshot()[2]] == [1, 1]
    buf.add(frame("prompt", ["b", "a"], step=2))
    assert [m["step"] for m in buf.snapshot()[2]] == [2, 2] and buf.size == 2


def test_a_frame_that_repeats_a_key_keeps_one_row_for_it():
    buf = SpaceBuffer("latent", capacity=10)
    assert buf.add(frame("latent", ["a", "b", "a"])) == 2
    assert buf.snapshot()[1] == ["a", "b"]


def prompt_frame(pairs, step=0):
    return Frame(run="r", space="prompt", step=step, ids=[clip for clip, _ in pairs],
                 meta=[{"prompt": text} for _, text in pairs], vectors=np.ones((len(pairs), 4), np.float16))


def test_each_prompt_text_of_a_clip_is_a_row_with_the_clip_as_its_id():
    buf = SpaceBuffer("prompt", capacity=100)
    assert buf.add(prompt_frame([("a", "rock, loud"), ("b", "jazz")])) == 2
    assert buf.add(prompt_frame([("a", "loud, rock"), ("a", "rock, loud")], step=1)) == 1  # one new text
    _, keys, meta = buf.snapshot()
    assert len(set(keys)) == 3
    assert [m["id"] for m in meta] == ["a", "b", "a"]
    assert [m["prompt"] for m in meta] == ["rock, loud", "jazz", "loud, rock"]


def test_prompt_variants_per_clip_are_bounded_oldest_first():
    buf = SpaceBuffer("prompt", capacity=100, variants_per_clip=3)
    for step in range(5):
        buf.add(prompt_frame([("a", f"text {step}"), ("b", "only")], step=step))
    buf.add(prompt_frame([("a", "x"), ("a", "y"), ("a", "z"), ("a", "w")], step=9))  # more than the bound at once
    _, _, meta = buf.snapshot()
    assert sorted(m["prompt"] for m in meta if m["id"] == "a") == ["w", "y", "z"]  # the newest three
    assert [m["prompt"] for m in meta if m["id"] == "b"] == ["only"]
    assert buf.size == 4
    latent = SpaceBuffer("latent", capacity=100, variants_per_clip=1)
    latent.add(Frame(run="r", space="latent", step=0, ids=["a", "a"], meta=[{"prompt": "1"}, {"prompt": "2"}],
                     vectors=np.ones((2, 4), np.float16)))
    assert latent.size == 1  # a latent row is the clip, whatever its prompt
