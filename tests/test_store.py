import os

import numpy as np

from collector.protocol import Frame, decode, encode
from collector.store import RunStore, run_dir_name


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
