"""The wire format between the trainer plugin and the collector.

A frame is three ZeroMQ message parts: ``[topic, header, payload]``.

- ``topic``: UTF-8 ``"<run>/<space>"`` so subscribers can filter by prefix.
- ``header``: UTF-8 JSON object (see ``encode`` for the keys). Per-row metadata travels as
  columns (``"rows": {"loss": [...], "layer": [...]}``, one value or null per row), so a frame
  of many rows costs one list per key rather than one object per row, in JSON and in checks.
  An optional ``"model"`` key names the model the run trains (``"acestep"``, ``"acestep15"``), so the
  collector and dashboard can label the run's spaces; frames without it decode as before.
- ``payload``: the raw little-endian float16 bytes of a C-contiguous ``(rows, dim)`` matrix.

``encode`` and ``decode`` are inverse functions, except that ``decode`` drops rows holding NaN
or Inf (counted in ``Frame.dropped_rows``). ``decode`` never raises anything but
``ProtocolError``, whose ``reason`` is a short stable code used to count rejects; it also reads
format version 1 (per-row metadata as a list of objects under ``"meta"``), so run stores
written before version 2 still replay. This module needs only numpy and the standard library,
so the trainer side can import it.

A second message kind, ``AdapterSizes`` (``encode_adapter`` / ``decode_message``), carries the
adapter's own update size per LoRA layer: topic ``"<run>/adapter"``, a JSON header with
``"kind": "adapter"`` and an empty payload (see docs/wire-format.md).
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: per-row metadata as a list of objects ("meta")
SPACES = ("latent", "lora", "prompt")
FROZEN_SPACES = ("latent", "prompt")  # outputs of frozen modules: one vector per clip (and prompt text) per run
DEFAULT_INGEST = "tcp://127.0.0.1:5557"  # the collector binds it, trainers connect
WIRE_DTYPE = "float16"

MAX_HEADER_BYTES = 1 << 20  # 1 MiB of JSON is far beyond any honest header
MAX_PAYLOAD_BYTES = 64 << 20
MAX_ROWS = 65536
MAX_DIM = 65536
MAX_TEXT_CHARS = 500  # prompt text and other free text per row
MAX_NAME_CHARS = 200  # run ids, sample ids, layer names
MAX_PATH_CHARS = 1024  # a clip's audio file path as the trainer saw it
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
MAX_SAFE_INT = 2**53  # integers beyond this do not survive a trip through a JSON double
MAX_MODEL_CHARS = 40
MODELS = ("acestep", "acestep15")  # the models the trainer plugin has presets for; the header accepts any short name

# Per-row metadata: free text, finite numbers, and integer overrides of the frame's step and
# micro-batch (a publisher that batches several steps into one frame sets them per row).
ROW_TEXT_KEYS = {"prompt": MAX_TEXT_CHARS, "layer": MAX_NAME_CHARS, "audio": MAX_PATH_CHARS}
ROW_NUMBER_KEYS = ("loss", "timestep")
ROW_INT_KEYS = ("step", "micro_batch")
ROW_META_KEYS = (*ROW_TEXT_KEYS, *ROW_NUMBER_KEYS, *ROW_INT_KEYS)

Columns = dict[str, list]


def run_name_problem(run: object) -> str | None:
    """What is wrong with a run name, or None. Run names become folder names, topic prefixes and URL parts."""
    if not isinstance(run, str) or not run or len(run) > MAX_NAME_CHARS or "/" in run:
        return f"must be 1 to {MAX_NAME_CHARS} characters without '/'"
    if _CONTROL_CHARS.search(run):
        return "must not contain control characters (NUL, newline, tab, ...)"
    return None  # per-row metadata: key -> one value (None: not set) per row


class ProtocolError(ValueError):
    """A frame that cannot be accepted. ``reason`` is a stable code for counting."""

    def __init__(self, reason: str, message: str):
        super().__init__(f"{reason}: {message}")
        self.reason = reason


@dataclass(init=False)
class Frame:
    """One batch of pooled vectors of a single space, from one training micro-batch (or several
    merged: then rows carry their own ``step`` / ``micro_batch`` columns).

    Per-row metadata is held as ``columns``; pass either ``columns`` or ``meta`` (one dict per
    row). ``frame.meta`` gives the rows back as dicts (keys without a value left out).
    """

    run: str
    space: str
    step: int
    vectors: np.ndarray  # (rows, dim), float16 on the wire
    ids: list[str]  # one sample id (clip key) per row
    micro_batch: int = 0
    rank: int = 0
    columns: Columns = field(default_factory=dict)  # ROW_META_KEYS -> one value per row
    sent_at: float = 0.0  # publisher wall clock, seconds since the epoch
    dropped_rows: int = 0  # rows ``decode`` left out because they held NaN or Inf
    model: str | None = None  # which model the run trains (``MODELS``); None: not said

    def __init__(self, run: str, space: str, step: int, vectors: np.ndarray, ids: list[str],
                 micro_batch: int = 0, rank: int = 0, meta: Sequence[dict] | None = None, sent_at: float = 0.0,
                 *, columns: Columns | None = None, dropped_rows: int = 0, model: str | None = None):
        self.run, self.space, self.step, self.vectors, self.ids = run, space, step, vectors, ids
        self.micro_batch, self.rank, self.sent_at, self.dropped_rows = micro_batch, rank, sent_at, dropped_rows
        self.model = model
        self.columns = columns if columns is not None else columns_from_rows(meta or ())

    @property
    def rows(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def meta(self) -> list[dict[str, Any]]:
        """Per-row metadata as one dict per row (built on each call: for tests and inspection)."""
        return [{key: values[row] for key, values in self.columns.items() if values[row] is not None}
                for row in range(len(self.ids))]


def columns_from_rows(rows: Sequence[dict]) -> Columns:
    """One dict per row -> one list per key (None where a row lacks the key)."""
    keys = dict.fromkeys(key for row in rows for key in row)
    return {key: [row.get(key) for row in rows] for key in keys}


def topic_for(run: str, space: str) -> bytes:
    return f"{run}/{space}".encode()


def check_shape(frame: Frame) -> None:
    """ValueError unless the vectors are a (rows, dim) matrix with one id and one value per column per row."""
    shape = np.shape(frame.vectors)
    if len(shape) != 2:
        raise ValueError(f"vectors must be 2-D (rows, dim), got shape {shape}")
    if len(frame.ids) != shape[0]:
        raise ValueError(f"{len(frame.ids)} ids for {shape[0]} rows")
    for key, values in frame.columns.items():
        if len(values) != shape[0]:
            raise ValueError(f"{len(values)} {key} values for {shape[0]} rows")


def encode(frame: Frame) -> list[bytes | memoryview]:
    """Turn a frame into the three message parts. The payload is a zero-copy view."""
    check_shape(frame)
    if frame.model is not None and model_name_problem(frame.model):
        raise ValueError(f"model {frame.model!r}: {model_name_problem(frame.model)}")
    vectors = np.ascontiguousarray(frame.vectors, dtype="<f2")
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
        "rows": _clean_columns(frame.columns),
        "sent_at": float(frame.sent_at),
    }
    if frame.model is not None:
        header["model"] = frame.model
    header_bytes = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    return [topic_for(frame.run, frame.space), header_bytes, memoryview(vectors).cast("B")]


def decode(parts: Sequence[bytes | memoryview | Any]) -> Frame:
    """Parse message parts into a ``Frame`` or raise ``ProtocolError``.

    Accepts ``bytes``, ``memoryview`` or pyzmq ``Frame`` objects (their ``.buffer``). Rows with
    NaN or Inf are left out and counted in ``dropped_rows``; a frame with no finite row is a
    ``non_finite`` reject.
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
    if type(version) is not int or version not in READABLE_VERSIONS:
        raise ProtocolError("version", f"unknown format version {version!r}; this collector reads "
                                       f"{', '.join(map(str, READABLE_VERSIONS))}")
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
    ids = _ids(header.get("ids"), rows)
    columns = _columns_v1(header, rows) if version == 1 else _columns(header.get("rows", {}), rows)
    vectors = np.frombuffer(payload, dtype="<f2").reshape(rows, dim)
    frame = Frame(run=run, space=space, step=_int(header, "step"), micro_batch=_int(header, "micro_batch"),
                  rank=_int(header, "rank"), vectors=vectors, ids=ids, columns=columns,
                  sent_at=_float(header, "sent_at"), model=_model(header))
    bad = non_finite_rows(vectors)
    return _without_rows(frame, bad) if bad.any() else frame


def non_finite_rows(vectors: np.ndarray) -> np.ndarray:
    """One bool per row: True where the row holds a NaN or Inf.

    For float16 a value is non-finite exactly when its five exponent bits are all ones; testing
    the bits reads the matrix once and beats np.isfinite on halves by ten times."""
    if vectors.dtype != np.float16:
        return ~np.isfinite(vectors).all(axis=1)
    exponents = np.bitwise_and(vectors.view(np.uint16), 0x7C00)
    return exponents.max(axis=1) == 0x7C00


def _without_rows(frame: Frame, bad: np.ndarray) -> Frame:
    """The frame without its non-finite rows; a ``non_finite`` reject if none is left."""
    if bad.all():
        raise ProtocolError("non_finite", "every row contains NaN or Inf")
    keep = np.flatnonzero(~bad).tolist()
    frame.vectors = frame.vectors[keep]
    frame.ids = [frame.ids[i] for i in keep]
    frame.columns = {key: [values[i] for i in keep] for key, values in frame.columns.items()}
    frame.dropped_rows = len(bad) - len(keep)
    return frame


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
        header = _HEADER_DECODER.decode(bytes(raw).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError, RecursionError) as exc:
        raise ProtocolError("json", f"header is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise ProtocolError("json", "header must be a JSON object")
    return header


def _reject_constant(name: str):
    raise ValueError(f"{name} is not allowed in a header")


_HEADER_DECODER = json.JSONDecoder(parse_constant=_reject_constant)  # built once, not per frame


def _name(header: dict, key: str) -> str:
    value = header.get(key)
    problem = run_name_problem(value)
    if problem:
        raise ProtocolError(key, f"{key} {problem}")
    return value


def _int(header: dict, key: str) -> int:
    value = header.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int) or not -MAX_SAFE_INT < value < MAX_SAFE_INT:
        raise ProtocolError(key, f"{key} must be an integer")
    return value


def _float(header: dict, key: str) -> float:
    value = header.get(key, 0.0)
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or (isinstance(value, int) and not -MAX_SAFE_INT < value < MAX_SAFE_INT) or not math.isfinite(value)):
        raise ProtocolError(key, f"{key} must be a finite number")  # a huge int would overflow isfinite
    return float(value)


def model_name_problem(model: object) -> str | None:
    """What is wrong with a model name for the header's optional ``model`` key, or None."""
    if not isinstance(model, str) or not _MODEL_NAME.fullmatch(model):
        return (f"must be 1 to {MAX_MODEL_CHARS} characters of a-z, 0-9, '.', '_' or '-', starting with a letter "
                f"or digit (e.g. {', '.join(MODELS)})")
    return None


_MODEL_NAME = re.compile(rf"[a-z0-9][a-z0-9._-]{{0,{MAX_MODEL_CHARS - 1}}}")


def _model(header: dict) -> str | None:
    """The header's optional ``model`` key: absent (older trainers) or a short lowercase name."""
    if "model" not in header:
        return None
    model = header["model"]
    problem = model_name_problem(model)
    if problem:
        raise ProtocolError("model", f"model {problem}")
    return model


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


def _ids(ids: Any, rows: int) -> list[str]:
    if not isinstance(ids, list) or len(ids) != rows or set(map(type, ids)) != {str}:
        raise ProtocolError("ids", f"ids must be a list of {rows} strings")
    if max(map(len, ids)) > MAX_NAME_CHARS:
        raise ProtocolError("ids", f"an id is longer than {MAX_NAME_CHARS} characters")
    return ids


# Per-row metadata checks, one call per column (not per row): C-level passes over each list.
_NONE = type(None)


def _text_ok(key: str, values: list) -> bool:
    return (set(map(type, values)) <= {str, _NONE}
            and max(map(len, filter(None, values)), default=0) <= ROW_TEXT_KEYS[key])


def _number_ok(key: str, values: list) -> bool:
    types = set(map(type, values))
    return (types <= {float, int, _NONE}
            and (int not in types or all(-MAX_SAFE_INT < v < MAX_SAFE_INT for v in values if type(v) is int))
            and all(map(math.isfinite, filter(None, values))))  # JSON has no NaN, but 1e999 parses to inf


def _int_ok(key: str, values: list) -> bool:
    return set(map(type, values)) <= {int, _NONE} and max(map(abs, filter(None, values)), default=0) < MAX_SAFE_INT


_COLUMN_CHECKS = {**{k: _text_ok for k in ROW_TEXT_KEYS}, **{k: _number_ok for k in ROW_NUMBER_KEYS},
                  **{k: _int_ok for k in ROW_INT_KEYS}}
_COLUMN_KINDS = {**{k: f"strings of at most {n} characters" for k, n in ROW_TEXT_KEYS.items()},
                 **{k: "finite numbers" for k in ROW_NUMBER_KEYS}, **{k: "integers" for k in ROW_INT_KEYS}}


def _columns(raw: Any, rows: int) -> Columns:
    """Check a version 2 header's per-row columns; unknown keys are dropped."""
    if not isinstance(raw, dict):
        raise ProtocolError("meta", "rows must be an object of per-row columns")
    columns = {}
    for key, values in raw.items():
        check = _COLUMN_CHECKS.get(key)
        if check is None:
            continue
        if not isinstance(values, list) or len(values) != rows or not check(key, values):
            raise ProtocolError("meta", f"rows.{key} must be a list of {rows} {_COLUMN_KINDS[key]} or null")
        columns[key] = values
    return columns


def _columns_v1(header: dict, rows: int) -> Columns:
    """A version 1 header's per-row objects (``meta``), checked as columns."""
    if "meta" not in header:
        return {}
    meta = header["meta"]
    if not isinstance(meta, list) or len(meta) != rows or not all(isinstance(m, dict) for m in meta):
        raise ProtocolError("meta", f"meta must be a list of {rows} objects")
    return _columns(columns_from_rows(meta), rows)


def _clean_columns(columns: Columns) -> Columns:
    """Known keys only, text bounded, non-finite numbers as null (JSON has no NaN); all-null columns left out."""
    out = {}
    for key, values in columns.items():
        clean = _CLEANERS.get(key)
        if clean is None:
            continue
        values = clean(key, values)
        if any(v is not None for v in values):
            out[key] = values
    return out


def _clean_text(key: str, values: list) -> list:
    limit = ROW_TEXT_KEYS[key]
    if _text_ok(key, values):
        return values  # the usual case, checked in one pass: nothing to change
    return [None if v is None else str(v)[:limit] for v in values]


def _clean_numbers(key: str, values: list) -> list:
    if set(map(type, values)) <= {float, _NONE} and all(map(math.isfinite, filter(None, values))):
        return values  # the usual case, checked in one pass: nothing to change
    return [_finite_or_none(v) for v in values]


def _finite_or_none(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _clean_ints(key: str, values: list) -> list:
    if set(map(type, values)) <= {int, _NONE}:
        return values
    return [None if v is None else int(v) for v in values]


_CLEANERS = {**{k: _clean_text for k in ROW_TEXT_KEYS}, **{k: _clean_numbers for k in ROW_NUMBER_KEYS},
             **{k: _clean_ints for k in ROW_INT_KEYS}}


# ---------------------------------------------------------------------------- adapter update sizes

ADAPTER_KIND = "adapter"  # the header's "kind" and the topic's suffix of an adapter message
MAX_ADAPTER_LAYERS = 4096  # a 24-layer DiT with q/k/v/o in two attentions has 192 LoRA layers


@dataclass
class AdapterSizes:
    """Each LoRA layer's update size ||scale * B A||_F / ||W||_F at one training step."""

    run: str
    step: int
    layers: dict[str, float]  # layer name -> update size (finite, >= 0)
    rank: int = 0
    sent_at: float = 0.0


def encode_adapter(message: AdapterSizes) -> list[bytes]:
    """The three message parts of an adapter message; ValueError for a bad run, layer name or value."""
    problem = run_name_problem(message.run)
    if problem:
        raise ValueError(f"run {message.run!r}: {problem}")
    header = {"v": FORMAT_VERSION, "kind": ADAPTER_KIND, "run": message.run, "step": int(message.step),
              "rank": int(message.rank), "sent_at": float(message.sent_at),
              "layers": {str(name): float(value) for name, value in message.layers.items()}}
    _check_layers(header["layers"], ValueError)
    raw = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    return [topic_for(message.run, ADAPTER_KIND), raw, b""]


def is_adapter_topic(topic: bytes | memoryview) -> bool:
    return bytes(topic).endswith(b"/" + ADAPTER_KIND.encode())


def decode_message(parts: Sequence[bytes | memoryview | Any]) -> "Frame | AdapterSizes":
    """A frame (``decode``) or an adapter message, told apart by the topic; only ``ProtocolError`` escapes."""
    if len(parts) == 3 and is_adapter_topic(_as_buffer(parts[0])):
        return decode_adapter(parts)
    return decode(parts)


def decode_adapter(parts: Sequence[bytes | memoryview | Any]) -> AdapterSizes:
    """Parse an adapter message or raise ``ProtocolError`` (finite sizes, bounded names and layer count)."""
    if len(parts) != 3:
        raise ProtocolError("part_count", f"expected 3 message parts, got {len(parts)}")
    topic, header_raw, payload = (_as_buffer(p) for p in parts)
    if len(header_raw) > MAX_HEADER_BYTES:
        raise ProtocolError("oversize", f"header of {len(header_raw)} bytes exceeds {MAX_HEADER_BYTES}")
    if len(payload):
        raise ProtocolError("size", "an adapter message has an empty payload")
    header = _parse_header(header_raw)
    if header.get("v") != FORMAT_VERSION or type(header.get("v")) is not int:
        raise ProtocolError("version", f"adapter messages are format version {FORMAT_VERSION}, got {header.get('v')!r}")
    if header.get("kind") != ADAPTER_KIND:
        raise ProtocolError("kind", f"kind {header.get('kind')!r} is not {ADAPTER_KIND!r}")
    run = _name(header, "run")
    if bytes(topic) != topic_for(run, ADAPTER_KIND):
        raise ProtocolError("topic", "topic does not match the header's run")
    layers = header.get("layers")
    _check_layers(layers, lambda message: ProtocolError("layers", message))
    return AdapterSizes(run=run, step=_int(header, "step"), layers=dict(layers), rank=_int(header, "rank"),
                        sent_at=_float(header, "sent_at"))


def _check_layers(layers: Any, error) -> None:
    """Raise ``error(message)`` unless ``layers`` maps 1 to MAX_ADAPTER_LAYERS names to finite sizes >= 0."""
    if not isinstance(layers, dict) or not 1 <= len(layers) <= MAX_ADAPTER_LAYERS:
        raise error(f"layers must be an object of 1 to {MAX_ADAPTER_LAYERS} layer names")
    for name, value in layers.items():
        if not name or len(name) > MAX_NAME_CHARS or _CONTROL_CHARS.search(name):
            raise error(f"layer names must be 1 to {MAX_NAME_CHARS} characters without control characters")
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or (isinstance(value, int) and abs(value) >= MAX_SAFE_INT) or not math.isfinite(value) or value < 0):
            raise error(f"layer {name!r}: the update size must be a finite number >= 0, got {value!r}")
