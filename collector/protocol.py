"""The wire format between the trainer plugin and the collector.

A frame is three ZeroMQ message parts: ``[topic, header, payload]``.

- ``topic``: UTF-8 ``"<run>/<space>"`` so subscribers can filter by prefix.
- ``header``: UTF-8 JSON object (see ``encode`` for the keys).
- ``payload``: the raw little-endian float16 bytes of a C-contiguous ``(rows, dim)`` matrix.

``encode`` and ``decode`` are inverse functions. ``decode`` never raises anything but
``ProtocolError``, whose ``reason`` is a short stable code used to count rejects.
This module needs only numpy and the standard library, so the trainer side can import it.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

FORMAT_VERSION = 1
SPACES = ("latent", "lora", "prompt")
WIRE_DTYPE = "float16"

MAX_HEADER_BYTES = 1 << 20  # 1 MiB of JSON is far beyond any honest header
MAX_PAYLOAD_BYTES = 64 << 20
MAX_ROWS = 65536
MAX_DIM = 65536
MAX_TEXT_CHARS = 500  # prompt text and other free text per row
MAX_NAME_CHARS = 200  # run ids, sample ids, layer names

# Per-row metadata: free text, finite numbers, and integer overrides of the frame's step and
# micro-batch (a publisher that batches several steps into one frame sets them per row).
ROW_TEXT_KEYS = {"prompt": MAX_TEXT_CHARS, "layer": MAX_NAME_CHARS}
ROW_NUMBER_KEYS = ("loss", "timestep")
ROW_INT_KEYS = ("step", "micro_batch")
ROW_META_KEYS = (*ROW_TEXT_KEYS, *ROW_NUMBER_KEYS, *ROW_INT_KEYS)


class ProtocolError(ValueError):
    """A frame that cannot be accepted. ``reason`` is a stable code for counting."""

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason


@dataclass
class Frame:
    """One batch of pooled vectors of a single space, from one training micro-batch."""

    run: str
    space: str
    step: int
    vectors: np.ndarray  # (rows, dim), float16 on the wire
    ids: list[str]  # one sample id (clip key) per row
    micro_batch: int = 0
    rank: int = 0
    meta: list[dict[str, Any]] = field(default_factory=list)  # per row: ROW_META_KEYS
    sent_at: float = 0.0  # publisher wall clock, seconds since the epoch

    @property
    def rows(self) -> int:
        return int(self.vectors.shape[0])


def topic_for(run: str, space: str) -> bytes:
    return f"{run}/{space}".encode()


def encode(frame: Frame) -> list[bytes | memoryview]:
    """Turn a frame into the three message parts. The payload is a zero-copy view."""
    vectors = np.ascontiguousarray(frame.vectors, dtype="<f2")
    if vectors.ndim != 2:
        raise ValueError(f"vectors must be 2-D (rows, dim), got shape {vectors.shape}")
    if len(frame.ids) != vectors.shape[0]:
        raise ValueError(f"{len(frame.ids)} ids for {vectors.shape[0]} rows")
    meta = frame.meta or [{} for _ in frame.ids]
    if len(meta) != vectors.shape[0]:
        raise ValueError(f"{len(meta)} metadata rows for {vectors.shape[0]} rows")
    header = {
        "v": FORMAT_VERSION,
        "run": frame.run,
        "space": frame.space,
        "step": int(frame.step),
        "micro_batch": int(frame.micro_batch),
        "rank": int(frame.rank),
        "shape": list(vectors.shape),
        "dtype": WIRE_DTYPE,
        "ids": [str(i)[:MAX_NAME_CHARS] for i in frame.ids],
        "meta": [_clean_row_meta(m) for m in meta],
        "sent_at": float(frame.sent_at),
    }
    header_bytes = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    return [topic_for(frame.run, frame.space), header_bytes, memoryview(vectors).cast("B")]


def decode(parts: Sequence[bytes | memoryview | Any]) -> Frame:
    """Parse message parts into a ``Frame`` or raise ``ProtocolError``.

    Accepts ``bytes``, ``memoryview`` or pyzmq ``Frame`` objects (their ``.buffer``).
    """
    if len(parts) != 3:
        raise ProtocolError("part_count", f"expected 3 message parts, got {len(parts)}")
    topic, header_raw, payload = (_as_buffer(p) for p in parts)
    if len(header_raw) > MAX_HEADER_BYTES:
        raise ProtocolError("oversize", f"header of {len(header_raw)} bytes exceeds {MAX_HEADER_BYTES}")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ProtocolError("oversize", f"payload of {len(payload)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    header = _parse_header(header_raw)
    version = header.get("v")
    if version != FORMAT_VERSION:
        raise ProtocolError("version", f"unknown format version {version!r}; this collector reads {FORMAT_VERSION}")
    run = _name(header, "run")
    space = header.get("space")
    if space not in SPACES:
        raise ProtocolError("space", f"unknown space {space!r}; expected one of {', '.join(SPACES)}")
    if bytes(topic) != topic_for(run, space):
        raise ProtocolError("topic", "topic does not match the header's run and space")
    if header.get("dtype") != WIRE_DTYPE:
        raise ProtocolError("dtype", f"dtype {header.get('dtype')!r} is not {WIRE_DTYPE}")
    rows, dim = _shape(header.get("shape"))
    if len(payload) != rows * dim * 2:
        raise ProtocolError("size", f"payload has {len(payload)} bytes, "
                                    f"shape {rows}x{dim} float16 needs {rows * dim * 2}")
    ids = header.get("ids")
    if not isinstance(ids, list) or len(ids) != rows or not all(isinstance(i, str) for i in ids):
        raise ProtocolError("ids", f"ids must be a list of {rows} strings")
    if any(len(i) > MAX_NAME_CHARS for i in ids):
        raise ProtocolError("ids", f"an id is longer than {MAX_NAME_CHARS} characters")
    meta = header.get("meta", [{} for _ in ids])
    if not isinstance(meta, list) or len(meta) != rows or not all(isinstance(m, dict) for m in meta):
        raise ProtocolError("meta", f"meta must be a list of {rows} objects")
    vectors = np.frombuffer(payload, dtype="<f2").reshape(rows, dim)
    if not all_finite(vectors):
        raise ProtocolError("non_finite", "vectors contain NaN or Inf")
    return Frame(
        run=run,
        space=space,
        step=_int(header, "step"),
        micro_batch=_int(header, "micro_batch"),
        rank=_int(header, "rank"),
        vectors=vectors,
        ids=ids,
        meta=[_check_row_meta(m) for m in meta],
        sent_at=_float(header, "sent_at"),
    )


def all_finite(vectors: np.ndarray) -> bool:
    """True unless NaN or Inf. For float16 the exponent bits test beats np.isfinite on halves."""
    if vectors.dtype != np.float16:
        return bool(np.isfinite(vectors).all())
    # A half is non-finite exactly when its five exponent bits are all ones.
    return not ((vectors.view(np.uint16) & 0x7C00) == 0x7C00).any()


def _as_buffer(part: Any) -> memoryview:
    if isinstance(part, (bytes, bytearray)):
        return memoryview(part)
    if isinstance(part, memoryview):
        return part.cast("B") if part.format != "B" else part
    buffer = getattr(part, "buffer", None)  # zmq.Frame
    if buffer is not None:
        return memoryview(buffer).cast("B")
    raise ProtocolError("part_type", f"message part of type {type(part).__name__} is not bytes")


def _parse_header(raw: memoryview) -> dict:
    try:
        header = json.loads(bytes(raw).decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError("json", f"header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise ProtocolError("json", "header must be a JSON object")
    return header


def _reject_constant(name: str):
    raise ValueError(f"{name} is not allowed in a header")


def _name(header: dict, key: str) -> str:
    value = header.get(key)
    if not isinstance(value, str) or not value or len(value) > MAX_NAME_CHARS or "/" in value:
        raise ProtocolError(key, f"{key} must be a non-empty string of at most {MAX_NAME_CHARS} characters without '/'")
    return value


def _int(header: dict, key: str) -> int:
    value = header.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or not -(2**53) < value < 2**53:
        raise ProtocolError(key, f"{key} must be an integer")
    return value


def _float(header: dict, key: str) -> float:
    value = header.get(key, 0.0)
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or (isinstance(value, int) and not -(2**53) < value < 2**53) or not math.isfinite(value)):
        raise ProtocolError(key, f"{key} must be a finite number")  # a huge int would overflow isfinite
    return float(value)


def _shape(shape: Any) -> tuple[int, int]:
    if (
        not isinstance(shape, list)
        or len(shape) != 2
        or not all(isinstance(n, int) and not isinstance(n, bool) for n in shape)
    ):
        raise ProtocolError("shape", f"shape must be [rows, dim], got {shape!r}")
    rows, dim = shape
    if not (1 <= rows <= MAX_ROWS and 1 <= dim <= MAX_DIM):
        raise ProtocolError("shape", f"shape {rows}x{dim} is outside 1..{MAX_ROWS} x 1..{MAX_DIM}")
    return rows, dim


_ROW_KIND = {**{k: "text" for k in ROW_TEXT_KEYS}, **{k: "number" for k in ROW_NUMBER_KEYS},
             **{k: "int" for k in ROW_INT_KEYS}}


def _clean_row_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """Keep the known keys, bound text, drop non-finite numbers (JSON has no NaN)."""
    out: dict[str, Any] = {}
    for key, value in meta.items():
        kind = _ROW_KIND.get(key)
        if kind is None or value is None:
            continue
        if kind == "text":
            out[key] = str(value)[: ROW_TEXT_KEYS[key]]
        elif kind == "number":
            value = float(value)
            if math.isfinite(value):
                out[key] = value
        else:
            out[key] = int(value)
    return out


def _check_row_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """Validate one row's metadata; returns it (unknown keys and nulls dropped). Runs per row: keep it lean."""
    for key, value in meta.items():
        kind = _ROW_KIND.get(key)
        if kind is None or value is None:
            return _check_row_meta({k: v for k, v in meta.items() if k in _ROW_KIND and v is not None})
        cls = type(value)
        if kind == "text":
            if cls is not str or len(value) > ROW_TEXT_KEYS[key]:
                raise ProtocolError("meta", f"{key} must be a string of at most {ROW_TEXT_KEYS[key]} characters")
        elif kind == "number":
            if ((cls is not float and cls is not int) or (cls is int and not -(2**53) < value < 2**53)
                    or not math.isfinite(value)):  # a huge int would make isfinite raise OverflowError
                raise ProtocolError("meta", f"{key} must be a finite number")
        elif cls is not int or not -(2**53) < value < 2**53:
            raise ProtocolError("meta", f"{key} must be an integer")
    return meta
