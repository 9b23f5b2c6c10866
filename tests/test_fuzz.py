"""Bad input: hypothesis fuzz of ``decode`` (only ``ProtocolError`` may come out) and a storm of
100k garbage frames into a live collector process (still alive, every reject counted by reason,
a valid frame afterwards still accepted)."""
from __future__ import annotations

import json
import math
import os
import pickle
import random

import numpy as np
import pytest
import zmq
from garbage import PICKLE_SENTINEL, Boom, garbage_frames, send_all, valid_parts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import CollectorProcess, query, synthetic_frames, wait_for

from acestep_viz.wire import (
    FORMAT_VERSION,
    MAX_HEADER_BYTES,
    MAX_PAYLOAD_BYTES,
    READABLE_VERSIONS,
    Frame,
    ProtocolError,
    decode,
    encode,
)

STORM_FRAMES = int(os.environ.get("ACESTEP_VIZ_FUZZ_FRAMES", "100000"))
FUZZ = settings(max_examples=int(os.environ.get("ACESTEP_VIZ_FUZZ_EXAMPLES", "300")), deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def decode_or_protocol_error(parts) -> Frame | None:
    """The property: decode returns a Frame or raises ProtocolError, nothing else."""
    try:
        frame = decode(parts)
    except ProtocolError as exc:
        assert exc.reason and isinstance(exc.reason, str)
        return None
    assert frame.vectors.shape == (len(frame.ids), frame.vectors.shape[1])
    assert np.isfinite(frame.vectors.astype(np.float32)).all()
    return frame


json_scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
part_types = st.sampled_from((bytes, bytearray, memoryview, zmq.Frame))


@st.composite
def frames_with_a_twist(draw):
    """A valid frame whose header fields are each, maybe, replaced by an arbitrary JSON value."""
    rows, dim = draw(st.integers(1, 4)), draw(st.integers(1, 16))
    parts = valid_parts(random.Random(draw(st.integers(0, 2**32))), rows, dim)
    header = json.loads(parts[1])
    for key in list(header) + ["extra"]:
        if draw(st.booleans()):
            header[key] = draw(json_values)
    if draw(st.booleans()):
        header["shape"] = [draw(st.integers(-(2**65), 2**65)), draw(st.integers(-(2**65), 2**65))]
    payload = parts[2]
    if draw(st.booleans()):
        payload = draw(st.binary(max_size=256))
    wrap = draw(part_types)
    return [wrap(p) for p in (parts[0], json.dumps(header).encode(), payload)]


@FUZZ
@given(st.lists(st.binary(max_size=300), max_size=6), part_types)
def test_random_bytes_in_any_number_of_parts(parts, wrap):
    decode_or_protocol_error([wrap(p) for p in parts])


@FUZZ
@given(frames_with_a_twist())
def test_mutated_headers_only_raise_protocol_errors(parts):
    decode_or_protocol_error(parts)


@FUZZ
@given(json_values, st.binary(max_size=64))
def test_any_json_header(header, payload):
    decode_or_protocol_error([b"r/lora", json.dumps(header).encode(), payload])


@FUZZ
@given(st.integers(1, 4), st.integers(1, 32), st.data())
def test_rows_with_nan_or_inf_are_dropped_and_a_frame_of_only_such_rows_rejected(rows, dim, data):
    vectors = np.zeros((rows, dim), np.float16)
    bad_rows = data.draw(st.sets(st.integers(0, rows - 1), min_size=1))
    for row in bad_rows:
        vectors[row, data.draw(st.integers(0, dim - 1))] = data.draw(st.sampled_from((np.nan, np.inf, -np.inf)))
    header = {"v": FORMAT_VERSION, "run": "r", "space": "lora", "step": 0, "shape": [rows, dim],
              "dtype": "float16", "ids": [f"c{i}" for i in range(rows)], "rows": {"loss": list(range(rows))}}
    parts = [b"r/lora", json.dumps(header).encode(), vectors.tobytes()]
    if len(bad_rows) == rows:
        with pytest.raises(ProtocolError) as info:
            decode(parts)
        assert info.value.reason == "non_finite"
        return
    frame = decode_or_protocol_error(parts)
    kept = [i for i in range(rows) if i not in bad_rows]
    assert frame.ids == [f"c{i}" for i in kept] and frame.dropped_rows == len(bad_rows)
    assert [m.get("loss", 0) for m in frame.meta] == kept  # metadata stays with its row


@FUZZ
@given(st.one_of(st.integers(-(2**80), 2**80), st.just(None), st.text(max_size=5), st.floats(allow_nan=False)))
def test_unknown_versions_are_rejected(version):
    parts = valid_parts(random.Random(0))
    header = json.loads(parts[1])
    header["v"] = version
    result = decode_or_protocol_error([parts[0], json.dumps(header).encode(), parts[2]])
    assert (result is not None) == (type(version) is int and version in READABLE_VERSIONS)


@FUZZ
@given(st.lists(st.integers(-(2**80), 2**80), min_size=0, max_size=3), st.binary(max_size=64))
def test_lying_and_huge_shapes_are_rejected(shape, payload):
    header = {"v": FORMAT_VERSION, "run": "r", "space": "lora", "step": 0, "shape": shape, "dtype": "float16",
              "ids": ["c"] * (shape[0] if shape and 0 < shape[0] < 8 else 1)}
    frame = decode_or_protocol_error([b"r/lora", json.dumps(header).encode(), payload])
    if frame is not None:  # only an honest shape gets through
        assert len(payload) == math.prod(shape) * 2


@FUZZ
@given(st.text(max_size=12))
def test_wrong_dtypes_are_rejected(dtype):
    parts = valid_parts(random.Random(1))
    header = json.loads(parts[1])
    header["dtype"] = dtype
    frame = decode_or_protocol_error([parts[0], json.dumps(header).encode(), parts[2]])
    assert (frame is not None) == (dtype == "float16")


def test_oversized_json_and_payload_are_rejected_before_parsing():
    header = json.dumps({"v": 1, "pad": "x" * MAX_HEADER_BYTES}).encode()
    with pytest.raises(ProtocolError) as info:
        decode([b"r/lora", header, b"\0\0"])
    assert info.value.reason == "oversize"
    with pytest.raises(ProtocolError) as info:
        decode([b"r/lora", b"{}", bytearray(MAX_PAYLOAD_BYTES + 2)])
    assert info.value.reason == "oversize"


def test_deeply_nested_json_is_a_json_reject():
    with pytest.raises(ProtocolError) as info:
        decode([b"r/lora", b"[" * 100_000 + b"]" * 100_000, b""])
    assert info.value.reason == "json"


def test_huge_integers_where_numbers_go_are_rejected_not_overflowing():
    """Found by this fuzz: a 400-digit integer made math.isfinite raise OverflowError."""
    parts = valid_parts(random.Random(2), rows=1)
    for key, value in (("sent_at", 10**400), ("rows", {"loss": [10**400]}), ("rows", {"timestep": [-(10**30)]}),
                       ("rows", {"step": [10**400]})):
        header = json.loads(parts[1])
        header[key] = value
        with pytest.raises(ProtocolError):
            decode([parts[0], json.dumps(header).encode(), parts[2]])


@FUZZ
@given(st.integers(0, pickle.HIGHEST_PROTOCOL), st.integers(0, 2))
def test_crafted_pickles_are_only_ever_bytes(protocol, where):
    parts = valid_parts(random.Random(3))
    parts[where] = pickle.dumps(Boom(), protocol=protocol)
    decode_or_protocol_error(parts)  # a SystemExit(PICKLE_SENTINEL) here would mean it was unpickled


# -- the live collector ------------------------------------------------------------------------

@pytest.mark.slow
def test_a_live_collector_survives_a_garbage_storm(tmp_path):
    storm(tmp_path, STORM_FRAMES)


def storm(tmp_path, count: int) -> dict:
    """``count`` garbage frames into a live collector, then a valid run; returns what was counted."""
    frames, expected = garbage_frames(count)
    with CollectorProcess(tmp_path / "store") as collector:
        before = query(collector.query, {"op": "stats"})
        ctx = zmq.Context.instance()
        pub = ctx.socket(zmq.XPUB)
        pub.setsockopt(zmq.LINGER, 5000)
        pub.setsockopt(zmq.SNDHWM, 10_000)
        pub.setsockopt(zmq.XPUB_NODROP, 1)  # a full pipe waits instead of dropping: every frame arrives
        try:
            pub.connect(collector.ingest)
            assert pub.poll(10_000), "the collector never subscribed"
            pub.recv()
            sent = send_all(pub, frames)

            def all_counted():
                stats = query(collector.query, {"op": "stats"}, timeout=10)
                return stats if stats["frames_received"] - before["frames_received"] >= sent else None
            stats = wait_for(all_counted, timeout=120, interval=0.5)
            assert collector.alive(), collector.log_text()
            assert stats["frames_received"] - before["frames_received"] == sent == count
            assert stats["frames_accepted"] == before["frames_accepted"]
            assert sum(stats["rejects"].values()) + stats["frames_accepted"] == stats["frames_received"]
            assert stats["rejects"] == dict(expected)
            assert stats["runs"] == {}

            good = synthetic_frames(run="after-storm", n_clips=12, steps=1)
            send_all(pub, [[bytes(p) for p in encode(f)] for f in good])
            stats = wait_for(lambda: (lambda s: s if s["frames_accepted"] >= len(good) else None)(
                query(collector.query, {"op": "stats"})), timeout=30)
            assert stats["frames_accepted"] == len(good)
            assert stats["runs"]["after-storm"]["latent"]["buffered"] == 12
        finally:
            pub.close()
        assert PICKLE_SENTINEL not in collector.log_text()
        assert collector.alive()
    return {"frames": sent, "rejected": sum(expected.values()), "rejects": dict(expected),
            "accepted_after": stats["frames_accepted"]}
