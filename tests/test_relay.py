"""The relay process: frames built and sent outside the training process, and what happens when it
cannot start, dies, or outlives its trainer."""
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from acestep_viz.trainer_plugin import attach
from acestep_viz.trainer_plugin.demo import SyntheticSongs, build_pipeline, collate
from acestep_viz.trainer_plugin.publisher import MemoryPublisher
from acestep_viz.trainer_plugin.relay import RelayPublisher
from acestep_viz.trainer_plugin.step_record import CaptureRows, StepRecord, encode_step, record_link_step

from tests.support import free_port, wait_for
from tests.test_publisher import SubCollector, loopback

ROOT = Path(__file__).resolve().parent.parent


def step(n: int, rows: int = 2, dim: int = 8) -> StepRecord:
    vectors = np.full((rows, dim), n, dtype=np.float32)
    return StepRecord(run="relay-test", rank=0, step=n, micro_batch=0, keys=[f"clip{i}" for i in range(rows)],
                      prompts=None, captures=[CaptureRows("lora", "blocks.0", 0, vectors)], loss=[0.5])


def running(pid: int) -> bool:
    """False once ``pid`` has exited, zombie included (nobody may be left to reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] not in ("Z", "X")
    except FileNotFoundError:
        return False


@pytest.mark.slow
def test_steps_reach_the_collector_through_the_relay_process():
    with SubCollector(loopback()) as collector:
        relay = RelayPublisher(collector.endpoint)
        pid = relay.stats()["relay_pid"]
        for n in range(150):  # more than one link message holds
            assert relay.publish(step(n))
        relay.wake()
        wait_for(lambda: len(collector.rows("lora")) == 300, timeout=30)
        relay.close()
        relay.close()  # twice is safe
    rows = collector.rows("lora")
    assert sorted({row["step"] for row in rows}) == list(range(150))
    assert all(np.all(row["vector"] == row["step"]) for row in rows)
    stats = relay.stats()
    assert (stats["sent"], stats["dropped"], stats["errors"]) == (150, 0, {})
    assert not running(pid)
    assert not relay.publish(step(9)) and relay.stats()["dropped"] == 1  # closed: refused and counted


@pytest.mark.slow
def test_the_tap_sends_through_a_relay_process_by_default():
    pipeline = build_pipeline(batch_size=2)
    pipeline.plot_step = lambda batch, batch_idx: None
    songs = SyntheticSongs(n_clips=4)
    with SubCollector(loopback()) as collector:
        tap = attach(pipeline, endpoint=collector.endpoint, run="relayed")
        assert isinstance(tap._publisher, RelayPublisher)
        for n in range(2):
            batch = collate([songs[2 * n], songs[2 * n + 1]])
            with tap.step(n, 0, batch):
                loss = pipeline.training_step(batch, n)
            loss.backward()
        tap.close()
        wait_for(lambda: len(collector.rows("lora")) == 12, timeout=30)
    stats = tap.stats()
    assert stats["frames_sent"] == stats["frames_queued"] == 6 and stats["frames_dropped"] == 0, stats
    assert sorted(row["id"] for row in collector.rows("latent")) == sorted(songs[i]["key"] for i in range(4))


@pytest.mark.slow
def test_the_relay_delivers_the_vectors_and_metadata_the_in_process_path_builds():
    """The relay gets sums, lengths, mask weights and LoRA scaling and divides in the child; the result
    must be what the thread sender's frames hold, row for row (masked prompts and ':delta' included)."""
    pipeline = build_pipeline(batch_size=3)
    pipeline.plot_step = lambda batch, batch_idx: None
    songs = SyntheticSongs(n_clips=6)
    layer = pipeline.get_submodule("transformers.transformer_blocks.0.attn.to_out.0")
    with torch.no_grad():
        for lora_b in layer.lora_B.values():
            lora_b.weight.normal_(0.0, 0.5)  # peft starts lora_B at zero: make the delta visible
    memory = MemoryPublisher()
    with SubCollector(loopback()) as collector:
        relayed = attach(pipeline, endpoint=collector.endpoint, run="same", frozen_once=False, lora_output="both")
        direct = attach(pipeline, publisher=memory, run="same", frozen_once=False, lora_output="both")
        for n in range(2):
            batch = collate([songs[i] for i in range(3 * n, 3 * n + 3)])
            for tap in (relayed, direct):
                tap.arm(n, 0, batch)
            loss = pipeline.training_step(batch, n)
            for tap in (relayed, direct):
                tap.disarm()
            loss.backward()
            for tap in (relayed, direct):
                tap.flush(loss=loss)
        relayed.close()
        direct.close()
        expected = {space: [(row["id"], row["step"], row.get("layer"), row.get("prompt"), row.get("loss"),
                             row["vector"].tobytes()) for row in rows_of(memory, space)]
                    for space in ("latent", "prompt", "lora")}
        wait_for(lambda: len(collector.rows("lora")) == len(expected["lora"]), timeout=30)
    assert [len(rows) for rows in expected.values()] == [6, 6, 36]  # 3 LoRA layers x (output, delta) x 3 clips x 2
    for space, rows in expected.items():
        got = [(row["id"], row["step"], row.get("layer"), row.get("prompt"), row.get("loss"),
                row["vector"].tobytes()) for row in collector.rows(space)]
        assert sorted(got, key=str) == sorted(rows, key=str), space


class InFlight:
    """A deferred step whose device copies are not done until ``done`` is set; notes where it was encoded."""

    frames = 1

    def __init__(self, n: int):
        self.record, self.done, self.encoded_on = step(n), threading.Event(), None

    def ready(self) -> bool:
        return self.done.is_set()

    def link_step(self):
        self.done.wait(10)  # what waiting for a CUDA event does
        self.encoded_on = threading.current_thread().name
        return encode_step(*record_link_step(self.record))


@pytest.mark.slow
def test_a_step_still_copying_from_the_device_is_sent_by_the_relay_thread_never_waited_for():
    with SubCollector(loopback()) as collector:
        relay = RelayPublisher(collector.endpoint)
        wait_for(lambda: relay._linked, timeout=30)
        first, ready = InFlight(0), step(1)
        started = time.monotonic()
        assert relay.publish(first) and relay.publish(ready)
        relay.wake()
        assert time.monotonic() - started < 5  # the caller did not wait for the copy
        assert first.encoded_on is None  # the relay thread waits for the copy; the step behind it waits too
        first.done.set()
        wait_for(lambda: len(collector.rows("lora")) == 4, timeout=30)
        relay.close()
    assert first.encoded_on == "acestep-viz-relay"
    assert [row["step"] for row in collector.rows("lora")] == [0, 0, 1, 1]


def rows_of(publisher: MemoryPublisher, space: str) -> list[dict]:
    return [{**meta, "id": frame.ids[row], "step": meta.get("step", frame.step), "vector": frame.vectors[row]}
            for frame in publisher.frames if frame.space == space for row, meta in enumerate(frame.meta)]


@pytest.mark.slow
def test_a_relay_that_cannot_start_costs_dropped_frames_not_an_error():
    relay = RelayPublisher(loopback(), python="/bin/false")  # the child exits at once
    wait_for(lambda: "relay_exited" in relay.stats()["errors"], timeout=30)
    assert not relay.publish(step(0))
    relay.close()
    assert relay.stats()["dropped"] == 1


@pytest.mark.slow
def test_a_relay_killed_mid_run_is_counted_and_later_frames_are_dropped():
    with SubCollector(loopback()) as collector:
        relay = RelayPublisher(collector.endpoint)
        relay.publish(step(0))
        relay.wake()
        wait_for(lambda: collector.rows("lora"), timeout=30)
        os.kill(relay.stats()["relay_pid"], signal.SIGKILL)
        wait_for(lambda: "relay_exited" in relay.stats()["errors"], timeout=30)
        refused = sum(not relay.publish(step(n)) for n in range(1, 4))
        relay.close()
    assert refused == 3 and relay.stats()["dropped"] >= 3


@pytest.mark.slow
def test_the_relay_exits_when_its_training_process_is_killed(tmp_path):
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from acestep_viz.trainer_plugin.relay import RelayPublisher
        relay = RelayPublisher("tcp://127.0.0.1:{free_port()}")
        print(relay.stats()["relay_pid"], flush=True)
        time.sleep(120)
    """)
    trainer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(trainer.stdout.readline())
        assert running(pid)
        trainer.kill()
        trainer.wait(10)
        wait_for(lambda: not running(pid), timeout=20)
    finally:
        trainer.kill()
        trainer.wait(10)


def test_bad_settings_are_errors_when_the_relay_is_made():
    with pytest.raises(ValueError, match="unknown publisher option"):
        RelayPublisher(loopback(), colour="red")
    with pytest.raises(ValueError, match="cannot connect"):
        RelayPublisher("tcp://nowhere")
    with pytest.raises(ValueError, match="cannot start the relay process.*sender='thread'"):
        RelayPublisher(loopback(), python="/nonexistent/python")
