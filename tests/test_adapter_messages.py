"""Adapter update-size messages: the wire format, the collector's per-run series, its store and query op."""
import json

import pytest
from acestep_viz.collector.service import Collector

from acestep_viz.wire import AdapterSizes, ProtocolError, decode, decode_adapter, decode_message, encode, encode_adapter
from tests.support import synthetic_frames


def message(step=50, run="run-a", **layers):
    return AdapterSizes(run=run, step=step, layers=layers or {"block0.q_proj": 0.001, "block0.k_proj": 0.002})


def test_an_adapter_message_round_trips():
    parts = encode_adapter(message())
    assert parts[0] == b"run-a/adapter" and parts[2] == b""
    back = decode_message(parts)
    assert isinstance(back, AdapterSizes)
    assert (back.run, back.step, back.layers) == ("run-a", 50, {"block0.q_proj": 0.001, "block0.k_proj": 0.002})


def test_frames_still_decode_through_decode_message():
    frame = synthetic_frames(steps=1)[0]
    assert decode_message(encode(frame)).space == frame.space


def with_header(parts, **changes):
    header = json.loads(parts[1])
    header.update(changes)
    return [parts[0], json.dumps(header).encode(), parts[2]]


@pytest.mark.parametrize("mutate, reason", [
    (lambda p: with_header(p, layers={"a": 1e999}), "json"),  # JSON's Infinity spelled as an overflow
    (lambda p: [p[0], p[1].replace(b"0.001", b"-0.001"), p[2]], "layers"),
    (lambda p: with_header(p, layers={"a": "big"}), "layers"),
    (lambda p: with_header(p, layers={"a": True}), "layers"),
    (lambda p: with_header(p, layers={}), "layers"),
    (lambda p: with_header(p, layers={"x" * 201: 0.1}), "layers"),
    (lambda p: with_header(p, layers={"bad\nname": 0.1}), "layers"),
    (lambda p: with_header(p, layers={f"l{i}": 0.1 for i in range(4097)}), "layers"),
    (lambda p: with_header(p, layers=[0.1]), "layers"),
    (lambda p: with_header(p, step="50"), "step"),
    (lambda p: with_header(p, run="run-b"), "topic"),
    (lambda p: with_header(p, kind="frame"), "kind"),
    (lambda p: with_header(p, v=1), "version"),
    (lambda p: [p[0], p[1], b"\x00"], "size"),
    (lambda p: p[:2], "part_count"),
])
def test_decode_rejects_a_bad_adapter_message_with_a_reason(mutate, reason):
    with pytest.raises(ProtocolError) as caught:
        decode_message(mutate(encode_adapter(message())))
    assert caught.value.reason == reason


def test_json_infinity_is_refused():
    parts = encode_adapter(message())
    raw = parts[1].replace(b"0.001", b"Infinity")
    with pytest.raises(ProtocolError) as caught:
        decode_adapter([parts[0], raw, b""])
    assert caught.value.reason == "json"


def test_encode_refuses_non_finite_sizes():
    with pytest.raises(ValueError):
        encode_adapter(message(**{"a": float("nan")}))


def test_an_adapter_message_is_not_a_frame():
    with pytest.raises(ProtocolError):
        decode(encode_adapter(message()))


# -------------------------------------------------------------------------- the collector


@pytest.fixture
def collector(tmp_path):
    c = Collector("tcp://127.0.0.1:1", "tcp://127.0.0.1:2", str(tmp_path / "store"))
    yield c
    c.close()


def ask(collector, request):
    return collector.answer(json.dumps(request).encode())


def test_the_adapter_op_returns_each_layers_series_against_step(collector):
    for step, size in ((0, 0.0), (50, 0.01), (100, 0.02)):
        assert collector.ingest(encode_adapter(message(step, **{"b0.q": size, "b0.k": size / 2})))
    reply = ask(collector, {"op": "adapter", "run": "run-a"})
    assert reply == {"ok": True, "run": "run-a", "layers": {
        "b0.q": {"step": [0, 50, 100], "value": [0.0, 0.01, 0.02]},
        "b0.k": {"step": [0, 50, 100], "value": [0.0, 0.005, 0.01]}}}


def test_an_unknown_run_is_an_error_and_a_bad_message_a_counted_reject(collector):
    assert ask(collector, {"op": "adapter", "run": "nope"})["reason"] == "unknown_run"
    assert ask(collector, {"op": "adapter"})["reason"] == "bad_request"
    parts = encode_adapter(message())
    assert not collector.ingest([parts[0], parts[1].replace(b"0.001", b"-1"), b""])
    assert collector.state.rejects == {"layers": 1}


def test_a_run_with_frames_but_no_sizes_answers_empty(collector):
    for frame in synthetic_frames(run="run-f", steps=1):
        collector.ingest(encode(frame))
    assert ask(collector, {"op": "adapter", "run": "run-f"})["layers"] == {}


def test_the_series_survive_a_restart_and_a_clear_empties_them(tmp_path):
    store = str(tmp_path / "store")
    with_sizes = [encode_adapter(message(step, **{"b0.q": step / 1000})) for step in (0, 50, 100)]
    first = Collector("tcp://127.0.0.1:1", "tcp://127.0.0.1:2", store)
    for parts in with_sizes:
        first.ingest(parts)
    first.close()
    second = Collector("tcp://127.0.0.1:1", "tcp://127.0.0.1:2", store)
    try:
        assert second._replay() == 3
        assert ask(second, {"op": "adapter", "run": "run-a"})["layers"]["b0.q"]["step"] == [0, 50, 100]
        assert ask(second, {"op": "clear", "run": "run-a"})["ok"]
        assert ask(second, {"op": "adapter", "run": "run-a"})["layers"] == {}
    finally:
        second.close()
    third = Collector("tcp://127.0.0.1:1", "tcp://127.0.0.1:2", store)
    try:
        third._replay()
        assert third.state.adapter_reply("run-a")["layers"] == {}  # the clear was stored too
    finally:
        third.close()


def test_a_compacted_log_keeps_the_series(tmp_path):
    collector = Collector("tcp://127.0.0.1:1", "tcp://127.0.0.1:2", str(tmp_path / "store"))
    try:
        for frame in synthetic_frames(run="run-a", steps=2):
            collector.ingest(encode(frame))
        for step in (0, 50):
            collector.ingest(encode_adapter(message(step, **{"b0.q": 0.1 + step})))
        assert collector.upkeep.compact("run-a") is not None
        records = list(collector.store.frames_of("run-a"))
        sizes = [decode_message(p) for p in records if p[0].endswith(b"/adapter")]
        assert [(m.step, m.layers) for m in sizes] == [(0, {"b0.q": 0.1}), (50, {"b0.q": 50.1})]
    finally:
        collector.close()


def test_series_are_bounded_per_layer():
    from acestep_viz.collector.adapter_series import AdapterSeries

    series = AdapterSeries("run-a", max_steps=3)
    for step in range(5):
        series.add(message(step, **{"q": float(step)}))
    series.add(message(4, **{"q": 9.0}))  # the same step again keeps the latest value
    assert series.as_reply() == {"q": {"step": [2, 3, 4], "value": [2.0, 3.0, 9.0]}}
