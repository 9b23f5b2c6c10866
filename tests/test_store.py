import os

import numpy as np
import pytest
from acestep_viz.collector.store import RunStore, control_record, parse_control, run_dir_name

from acestep_viz.wire import Frame, ProtocolError, decode, encode


def wire(step, run="run-a"):
    return [bytes(p) for p in encode(Frame(run=run, space="lora", step=step, ids=["c"],
                                           vectors=np.full((1, 4), step, np.float16)))]


def test_frames_come_back_in_order(tmp_path):
    with RunStore(tmp_path) as store:
        for step in range(5):
            store.append("run-a", wire(step))
    steps = [decode(parts).step for parts in RunStore(tmp_path).replay()]
    assert steps == [0, 1, 2, 3, 4]


def test_torn_tail_is_skipped_and_appending_continues(tmp_path):
    with RunStore(tmp_path) as store:
        for step in range(3):
            store.append("run-a", wire(step))
    path = RunStore(tmp_path).log_path("run-a")
    os.truncate(path, path.stat().st_size - 5)  # a crash mid-record
    assert [decode(p).step for p in RunStore(tmp_path).replay()] == [0, 1]
    with RunStore(tmp_path) as store:
        store.append("run-a", wire(9))
    assert [decode(p).step for p in RunStore(tmp_path).replay()] == [0, 1, 9]


def test_corrupted_record_ends_the_readable_log(tmp_path):
    with RunStore(tmp_path) as store:
        for step in range(3):
            store.append("run-a", wire(step))
    path = RunStore(tmp_path).log_path("run-a")
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    assert [decode(p).step for p in RunStore(tmp_path).replay()] == [0, 1]


def test_run_names_cannot_escape_the_store():
    for name in ("..", ".hidden", "a b", "x" * 300):
        assert "/" not in run_dir_name(name) and not run_dir_name(name).startswith(".")
    assert run_dir_name("demo-20261125-120000") == "demo-20261125-120000"


def test_forget_removes_a_run(tmp_path):
    with RunStore(tmp_path) as store:
        store.append("run-a", wire(1))
        store.append("run-b", wire(1, run="run-b"))
        store.forget("run-a")
    assert [decode(p).run for p in RunStore(tmp_path).replay()] == ["run-b"]


def test_a_cleared_space_is_not_replayed_but_later_frames_and_other_spaces_are(tmp_path):
    latent = [bytes(p) for p in encode(Frame(run="run-a", space="latent", step=0, ids=["c"],
                                             vectors=np.ones((1, 4), np.float16)))]
    with RunStore(tmp_path) as store:
        store.append("run-a", latent)
        for step in range(3):
            store.append("run-a", wire(step))
        store.mark_cleared("run-a", "lora")
        store.append("run-a", wire(7))
    frames = [decode(p) for p in RunStore(tmp_path).replay()]
    assert [(f.space, f.step) for f in frames] == [("latent", 0), ("lora", 7)]


def test_a_clear_record_is_never_a_data_frame():
    with pytest.raises(ProtocolError):
        decode(control_record("clear", space="lora", at=1.0))
    assert parse_control(control_record("clear", space="lora", at=1.0))["space"] == "lora"
    assert parse_control(wire(1)) is None


def test_a_torn_clear_record_is_dropped_like_a_torn_frame(tmp_path):
    with RunStore(tmp_path) as store:
        store.append("run-a", wire(0))
        store.mark_cleared("run-a", "lora")
    path = RunStore(tmp_path).log_path("run-a")
    os.truncate(path, path.stat().st_size - 3)  # the crash hit the clear record itself
    assert [decode(p).step for p in RunStore(tmp_path).replay()] == [0]
    with RunStore(tmp_path) as store:
        store.append("run-a", wire(1))
        store.mark_cleared("run-a", "lora")
        store.append("run-a", wire(2))
    assert [decode(p).step for p in RunStore(tmp_path).replay()] == [2]
