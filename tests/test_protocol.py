import json
import pickle

import numpy as np
import pytest

from acestep_viz.wire import FORMAT_VERSION, MAX_HEADER_BYTES, MAX_PAYLOAD_BYTES, Frame, ProtocolError, decode, encode


def make_frame(rows=3, dim=8, **kw):
    rng = np.random.default_rng(1)
    base = dict(run="run-1", space="lora", step=7, micro_batch=1, rank=2,
                vectors=rng.normal(size=(rows, dim)).astype(np.float16), ids=[f"clip{i}" for i in range(rows)],
                meta=[{"prompt": f"jazz <b>{i}</b>", "loss": 0.25, "timestep": 412.0, "layer": "blocks.0.attn.to_out.0"}
                      for i in range(rows)], sent_at=1234.5)
    base.update(kw)
    return Frame(**base)


def wire(frame):
    return [bytes(p) for p in encode(frame)]


def with_header(parts, **changes):
    header = json.loads(parts[1])
    header.update(changes)
    return [parts[0], json.dumps(header).encode(), parts[2]]


def with_raw_rows(parts, raw: bytes):
    header = parts[1].replace(b'"rows":' + json.dumps(json.loads(parts[1])["rows"], separators=(",", ":")).encode(),
                              b'"rows":' + raw)
    assert header != parts[1]
    return [parts[0], header, parts[2]]


def test_round_trip_keeps_everything():
    frame = make_frame()
    back = decode(wire(frame))
    assert (back.run, back.space, back.step, back.micro_batch, back.rank) == ("run-1", "lora", 7, 1, 2)
    assert np.array_equal(back.vectors, frame.vectors) and back.vectors.dtype == np.float16
    assert back.ids == frame.ids and back.meta == frame.meta and back.sent_at == 1234.5


def test_round_trip_over_inproc_zero_copy():
    zmq = pytest.importorskip("zmq")
    ctx = zmq.Context.instance()
    pub, sub = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    pub.bind("inproc://protocol-test")
    sub.connect("inproc://protocol-test")
    try:
        frame = make_frame(rows=2, dim=2560)
        pub.send_multipart(encode(frame), copy=False)
        back = decode(sub.recv_multipart(copy=False))
        assert np.array_equal(back.vectors, frame.vectors)
    finally:
        pub.close()
        sub.close()


def test_encode_drops_non_finite_metadata_and_bounds_text():
    frame = make_frame(rows=1, meta=[{"loss": float("nan"), "prompt": "x" * 2000}])
    back = decode(wire(frame))
    assert "loss" not in back.meta[0] and len(back.meta[0]["prompt"]) == 500


@pytest.mark.parametrize("mutate, reason", [
    (lambda p: p[:2], "part_count"),
    (lambda p: p + [b"extra"], "part_count"),
    (lambda p: with_header(p, v=FORMAT_VERSION + 1), "version"),
    (lambda p: with_header(p, space="video"), "space"),
    (lambda p: with_header(p, shape=[3, 9]), "size"),
    (lambda p: with_header(p, shape=[10**6, 10**6]), "shape"),
    (lambda p: with_header(p, shape="3x8"), "shape"),
    (lambda p: with_header(p, dtype="float32"), "dtype"),
    (lambda p: with_header(p, ids=["a"]), "ids"),
    (lambda p: with_header(p, run=""), "run"),
    (lambda p: with_header(p, run="../../etc"), "run"),
    (lambda p: with_header(p, step="7"), "step"),
    (lambda p: with_header(p, rows={"loss": ["high"] * 3}), "meta"),
    (lambda p: with_header(p, rows={"loss": [0.5, True, 0.5]}), "meta"),
    (lambda p: with_raw_rows(p, b'{"timestep":[1e999,0,0]}'), "meta"),  # parses to inf
    (lambda p: with_header(p, rows={"step": [1, 2**60, 3]}), "meta"),
    (lambda p: with_header(p, rows={"step": [1, 2.5, 3]}), "meta"),
    (lambda p: with_header(p, rows={"layer": ["x" * 201, None, None]}), "meta"),
    (lambda p: with_header(p, rows={"prompt": ["a", "b"]}), "meta"),
    (lambda p: with_header(p, rows={"prompt": "abc"}), "meta"),
    (lambda p: with_header(p, rows=[{"loss": 0.5}] * 3), "meta"),
    (lambda p: with_header(p, v=1, meta=[{"loss": "high"}] * 3), "meta"),
    (lambda p: with_header(p, v=True), "version"),
    (lambda p: with_header(p, v=2.0), "version"),
    (lambda p: [b"other/lora", p[1], p[2]], "topic"),
    (lambda p: [b"run\x00x/lora", *with_header(p, run="run\x00x")[1:]], "run"),  # NUL in a run name
    (lambda p: [b"run\nx/lora", *with_header(p, run="run\nx")[1:]], "run"),
    (lambda p: [p[0], b"{not json", p[2]], "json"),
    (lambda p: [p[0], b"[1, 2]", p[2]], "json"),
    (lambda p: [p[0], b"\xff\xfe", p[2]], "json"),
    (lambda p: [p[0], b" " * (MAX_HEADER_BYTES + 1), p[2]], "oversize"),
    (lambda p: [p[0], p[1], b"\0" * (MAX_PAYLOAD_BYTES + 2)], "oversize"),
    (lambda p: [p[0], p[1], np.full(24, np.nan, np.float16).tobytes()], "non_finite"),
    (lambda p: [p[0], p[1], np.full(24, np.inf, np.float16).tobytes()], "non_finite"),
    (lambda p: [p[0], p[1], np.full((3, 8), [np.nan, -np.inf, 0, 0, 0, 0, 0, 1], np.float16).tobytes()],
     "non_finite"),
])
def test_decode_rejects_with_a_specific_reason(mutate, reason):
    with pytest.raises(ProtocolError) as err:
        decode(mutate(wire(make_frame())))
    assert err.value.reason == reason


def test_pickle_payload_is_rejected_as_data():
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('pickle ran')",))
    payload = pickle.dumps(Boom())
    for parts in ([b"run/lora", payload, b""], [b"run/lora", b"{}", payload], [payload, payload, payload]):
        with pytest.raises(ProtocolError):
            decode(parts)


def test_nan_constant_in_header_is_rejected():
    parts = wire(make_frame())
    header = parts[1].replace(b'"sent_at":1234.5', b'"sent_at":NaN')
    with pytest.raises(ProtocolError) as err:
        decode([parts[0], header, parts[2]])
    assert err.value.reason == "json"


def test_rows_with_nan_or_inf_are_dropped_one_by_one_and_counted():
    frame = make_frame(rows=4)
    frame.vectors[1, 3] = np.nan
    frame.vectors[3, 0] = -np.inf
    back = decode(wire(frame))
    assert back.ids == ["clip0", "clip2"] and back.dropped_rows == 2
    assert np.array_equal(back.vectors, frame.vectors[[0, 2]])
    assert [m["prompt"] for m in back.meta] == ["jazz <b>0</b>", "jazz <b>2</b>"]


def test_per_row_metadata_travels_as_columns_with_nulls_for_missing_values():
    frame = make_frame(rows=2, meta=[{"loss": 0.5, "layer": "b0"}, {"layer": "b1", "step": 9}])
    header = json.loads(wire(frame)[1])
    assert header["v"] == FORMAT_VERSION == 2
    assert header["rows"] == {"loss": [0.5, None], "layer": ["b0", "b1"], "step": [None, 9]}
    assert decode(wire(frame)).meta == [{"loss": 0.5, "layer": "b0"}, {"layer": "b1", "step": 9}]


def test_version_1_frames_from_older_stores_still_decode():
    parts = wire(make_frame(rows=2))
    header = json.loads(parts[1])
    del header["rows"]
    header.update(v=1, meta=[{"loss": 0.5, "layer": "b0", "unknown": 1}, {"prompt": "jazz", "step": 3}])
    back = decode([parts[0], json.dumps(header).encode(), parts[2]])
    assert back.meta == [{"loss": 0.5, "layer": "b0"}, {"prompt": "jazz", "step": 3}]


def test_unknown_columns_are_ignored():
    back = decode(with_header(wire(make_frame(rows=3)), rows={"mood": [1, 2, 3], "loss": [0.1, None, 0.3]}))
    assert [m.get("loss") for m in back.meta] == [0.1, None, 0.3] and "mood" not in back.columns


def test_dropped_rows_show_in_the_collector_stats_and_the_others_are_buffered():
    from acestep_viz.collector.state import CollectorState

    state = CollectorState()
    frame = make_frame(rows=3)
    frame.vectors[0, 0] = np.inf
    state.accept(decode(wire(frame)))
    stats = state.stats()
    assert stats["dropped_rows"] == {"non_finite": 1} and stats["rejects"] == {}
    assert stats["runs"]["run-1"]["lora"]["buffered"] == 2


def test_run_names_with_control_characters_are_refused_before_anything_is_sent():
    from acestep_viz.wire import run_name_problem

    assert run_name_problem("lora-rock_v2 (take 3)") is None
    for bad in ("a\x00b", "tab\there", "line\nbreak", "del\x7f", "", "a/b", "x" * 201):
        assert run_name_problem(bad), repr(bad)
