"""Bad wire frames for the fuzz test and the soak: deterministic, each one rejected by ``decode``.

``garbage_frames(n)`` yields ``n`` frames cycling through a few thousand distinct bad frames of
every kind the collector must survive: random bytes, wrong part counts, lying shapes, huge
declared shapes, wrong dtypes, NaN/Inf payloads, malformed and (rarely) oversized JSON, unknown
versions, bad names and metadata, and crafted pickles. Nothing here is larger than a few MiB,
so a live collector's SUB socket (MAXMSGSIZE) never drops the connection.
"""
from __future__ import annotations

import json
import pickle
import random
from collections import Counter

import numpy as np

from acestep_viz.wire import MAX_HEADER_BYTES, Frame, ProtocolError, decode, encode

PICKLE_SENTINEL = "acestep-viz-fuzz-pickle-ran"


class Boom:
    """Unpickling this would run code; it must only ever be treated as bytes."""

    def __reduce__(self):
        return (exec, (f"raise SystemExit({PICKLE_SENTINEL!r})",))


def valid_parts(rng: random.Random, rows: int = 2, dim: int = 8) -> list[bytes]:
    frame = Frame(run=f"fuzz{rng.randrange(5)}", space=rng.choice(("latent", "lora", "prompt")),
                  step=rng.randrange(1000), ids=[f"clip{rng.randrange(10**6)}" for _ in range(rows)],
                  vectors=np.asarray([[rng.uniform(-3, 3) for _ in range(dim)] for _ in range(rows)], np.float16),
                  meta=[{"prompt": "jazz", "loss": 0.5, "layer": "b0"} for _ in range(rows)], sent_at=1.0)
    return [bytes(p) for p in encode(frame)]


def _with_header(parts: list[bytes], **changes) -> list[bytes]:
    header = json.loads(parts[1])
    for key, value in changes.items():
        if value is _DELETE:
            header.pop(key, None)
        else:
            header[key] = value
    return [parts[0], json.dumps(header).encode(), parts[2]]


_DELETE = object()


def _nan_payload(rng: random.Random, parts: list[bytes]) -> list[bytes]:
    values = np.frombuffer(parts[2], "<f2").copy()
    values[rng.randrange(values.size)] = rng.choice((np.nan, np.inf, -np.inf))
    return [parts[0], parts[1], values.tobytes()]


def _bad(rng: random.Random) -> list[bytes]:
    """One bad frame of a randomly chosen kind."""
    good = valid_parts(rng, rows=rng.randint(1, 3), dim=rng.choice((4, 8, 16)))
    kind = rng.randrange(24)
    rand = lambda n: bytes(rng.getrandbits(8) for _ in range(n))  # noqa: E731
    if kind == 0:
        return [rand(rng.randrange(0, 64))]
    if kind == 1:
        return [rand(8) for _ in range(rng.choice((2, 4, 5, 7)))]
    if kind == 2:
        return [rand(10), rand(rng.randrange(1, 200)), rand(rng.randrange(0, 64))]
    if kind == 3:
        return [good[0], good[1][: rng.randrange(1, len(good[1]))], good[2]]  # truncated JSON
    if kind == 4:
        return [good[0], json.dumps(rng.choice(([], 1, "x", None, [1, 2]))).encode(), good[2]]
    if kind == 5:
        return _with_header(good, v=rng.choice((0, 3, 99, "2", None, 2.0 + 1e-9, -1, True)))
    if kind == 6:
        return _with_header(good, v=_DELETE)
    if kind == 7:
        return _with_header(good, space=rng.choice(("video", "", None, 3, "LATENT")))
    if kind == 8:
        return [b"other/lora", good[1], good[2]]  # topic does not match
    if kind == 9:
        return _with_header(good, dtype=rng.choice(("float32", "<f2", "int8", None, "bfloat16")))
    if kind == 10:  # lying shape: claims more or fewer rows than the payload holds
        rows, dim = json.loads(good[1])["shape"]
        return _with_header(good, shape=[rows + rng.choice((-1, 1, 5)) or 2, dim])
    if kind == 11:  # huge declared shapes
        return _with_header(good, shape=rng.choice(([10**9, 10**9], [2**63, 2], [65536, 65536], [1, 2**70])))
    if kind == 12:
        return _with_header(good, shape=rng.choice(([0, 4], [-1, 8], [1.5, 4], [True, 4], [4], "2x8", None)))
    if kind == 13:
        return _nan_payload(rng, good)
    if kind == 14:
        return [good[0], good[1], good[2] + rand(rng.choice((1, 2, 3)))]  # payload longer than the shape
    if kind == 15:
        return _with_header(good, ids=rng.choice((None, "abc", [1, 2], [])))
    if kind == 16:
        rows = len(json.loads(good[1])["ids"])
        return _with_header(good, rows=rng.choice(({"loss": ["high"] * rows}, {"loss": [10**400] * rows},
                                                   {"prompt": ["x" * 600] * rows}, {"step": [1.5] * rows},
                                                   {"layer": ["b0"] * (rows + 1)}, "rows", [1, 2, 3])))
    if kind == 17:
        return _with_header(good, run=rng.choice(("a/b", "", None, "r" * 201, 7)))
    if kind == 18:
        return _with_header(good, step=rng.choice(("1", 1.5, 2**60, None, [1])))
    if kind == 19:
        return _with_header(good, sent_at=rng.choice((10**400, "now", [0])))
    if kind == 20:  # crafted pickles wherever a part goes
        blob = pickle.dumps(Boom(), protocol=rng.randrange(0, pickle.HIGHEST_PROTOCOL + 1))
        where = rng.randrange(3)
        parts = list(good)
        parts[where] = blob
        return parts
    if kind == 21:  # NaN / Infinity literals and deep nesting in the JSON
        return [good[0], rng.choice((b'{"v": NaN}', b'{"v": 1, "sent_at": Infinity}', b"[" * 5000 + b"]" * 5000,
                                     b'{"v": 1, "run": "\xff\xfe"}')), good[2]]
    if kind == 22:  # structurally valid JSON, wrong content types everywhere
        return [good[0], json.dumps({k: None for k in json.loads(good[1])}).encode(), good[2]]
    # a valid header with an odd payload length
    return [good[0], good[1], good[2][:-1]]


def reason_of(parts: list[bytes]) -> str | None:
    """The reject reason ``decode`` gives, or None if the frame decodes."""
    try:
        decode(parts)
    except ProtocolError as exc:
        return exc.reason
    return None


def distinct_bad_frames(count: int = 2000, seed: int = 7) -> list[list[bytes]]:
    rng = random.Random(seed)
    frames = []
    while len(frames) < count:
        parts = _bad(rng)
        if reason_of(parts) is not None:
            frames.append(parts)
    return frames


def oversized_header_frame() -> list[bytes]:
    header = json.dumps({"v": 1, "pad": "x" * (MAX_HEADER_BYTES + 10)}).encode()
    return [b"fuzz0/lora", header, b"\0\0"]


def garbage_frames(n: int, seed: int = 7, distinct: int = 2000, oversized_every: int = 25_000
                   ) -> tuple[list[list[bytes]], Counter]:
    """``n`` bad frames (a cycle of ``distinct`` ones plus an oversized header now and then) and
    the reject reasons a collector must count for them."""
    pool = distinct_bad_frames(distinct, seed)
    reasons = [reason_of(p) for p in pool]
    big = oversized_header_frame()
    frames, expected = [], Counter()
    for i in range(n):
        if oversized_every and i % oversized_every == oversized_every - 1:
            frames.append(big)
            expected["oversize"] += 1
        else:
            frames.append(pool[i % distinct])
            expected[reasons[i % distinct]] += 1
    return frames, expected


def send_all(sock, frames) -> int:
    """Send every frame on an XPUB socket with XPUB_NODROP set, waiting for room; returns the count."""
    import zmq

    sent = 0
    for parts in frames:
        while True:
            try:
                sock.send_multipart(parts, flags=zmq.NOBLOCK, copy=len(parts[-1]) < 4096)
                break
            except zmq.Again:
                sock.poll(100, zmq.POLLOUT)
        sent += 1
    return sent


