"""One training step's captures as plain data, and the frames built from it.

The tap hands each step to its publisher as a ``StepRecord``: per hook firing, its pooled rows
(float32, host memory) and where they sit among the clip keys, plus the step's metadata. Turning
a record into wire frames (size check, row planning, per-row metadata) is ``build_frames``, a pure
function that runs wherever the publisher does its work, by default in a separate process
(``relay``). ``encode_records`` / ``decode_records`` carry records to that process: a JSON header and
one float32 payload, never pickle. This module imports neither torch nor zmq.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, NamedTuple, Sequence

import numpy as np

from acestep_viz.wire import MAX_NAME_CHARS, MAX_TEXT_CHARS, SPACES, Frame

LINK_VERSION = 3
MAX_LINK_BYTES = 256 << 20
FLOAT16_MAX = 65504.0
_EMPTY = np.empty(0, dtype=np.float32)
# built once: json.dumps with any non-default argument builds a new encoder on every call
_LINK_JSON = json.JSONEncoder(separators=(",", ":"), check_circular=False)
STEP_FIELDS = ("run", "rank", "step", "micro_batch", "keys", "prompts", "loss", "timesteps", "sample_losses",
               "sent_at")  # then its captures, one list each
CAPTURE_FIELDS = ("space", "label", "first_key", "rows", "dim", "order", "keep", "scale", "weights")


class CaptureRows(NamedTuple):
    """One hook firing's pooled rows."""

    space: str
    label: str
    first_key: int  # its first row's index among the rows its module produced this step
    vectors: np.ndarray  # (rows, dim) float32
    order: int = 0  # the module's place among the declared ones: the first declared size wins a space
    keep: tuple[int, ...] | None = None  # row offsets to send (frozen clips already sent are left out); None: all


@dataclass
class StepRecord:
    run: str
    rank: int
    step: int
    micro_batch: int
    keys: list[str] | None
    prompts: list[str] | None
    captures: list[CaptureRows]
    loss: list[float] | None = None
    timesteps: list[float] | None = None
    sample_losses: list[float] | None = None
    sent_at: float = 0.0

    @property
    def frames(self) -> int:
        """How many frames ``build_frames`` makes of it: one per space with rows to send."""
        return len({c.space for c in self.captures if (len(c.keep) if c.keep is not None else c.vectors.shape[0])})


class _Row(NamedTuple):
    source: int  # row index in the concatenation of the space's captures
    key_index: int
    label: str


def build_frames(record: StepRecord, errors: Any) -> list[Frame]:
    """One frame per space with rows; ``errors.record(kind, exc)`` hears about captures left out."""
    by_space: dict[str, list[CaptureRows]] = {}
    for capture in record.captures:
        by_space.setdefault(capture.space, []).append(capture)
    frames = []
    for space, captures in by_space.items():
        frame = _space_frame(record, space, _same_size(space, captures, errors))
        if frame is not None:
            frames.append(frame)
    return frames


def row_id(keys: Sequence[str] | None, step: int, micro_batch: int, key_index: int) -> str:
    """Row i of a module's firings in a step belongs to clip keys[i] (clips encoded one by one)."""
    if keys:
        return keys[key_index % len(keys)]
    return f"step{step}-mb{micro_batch}-row{key_index}"


def to_wire(pooled: np.ndarray) -> np.ndarray:
    """Clamp to float16's range, then convert: one large activation cannot turn a row into Inf."""
    return np.clip(pooled, -FLOAT16_MAX, FLOAT16_MAX).astype(np.float16)


def _same_size(space: str, captures: list[CaptureRows], errors: Any) -> list[CaptureRows]:
    dim = min(captures, key=lambda c: c.order).vectors.shape[1]  # the first declared module's size wins
    kept = [c for c in captures if c.vectors.shape[1] == dim]
    if len(kept) < len(captures):
        odd = sorted({c.label for c in captures if c.vectors.shape[1] != dim})
        errors.record("dim_mismatch", ValueError(f"{space}: {', '.join(odd)} pool to a size other "
                                                 f"than {dim}; their rows are skipped"))
    return kept


def _space_frame(record: StepRecord, space: str, captures: list[CaptureRows]) -> Frame | None:
    rows, source = [], 0
    for capture in captures:
        count = capture.vectors.shape[0]
        offsets = range(count) if capture.keep is None else capture.keep
        rows.extend(_Row(source + offset, capture.first_key + offset, capture.label) for offset in offsets)
        source += count
    if not rows:
        return None
    vectors = captures[0].vectors if len(captures) == 1 else np.concatenate([c.vectors for c in captures])
    if len(rows) < vectors.shape[0]:
        vectors = vectors[[row.source for row in rows]]
    ids = [row_id(record.keys, record.step, record.micro_batch, row.key_index) for row in rows]
    return Frame(run=record.run, space=space, step=record.step, vectors=to_wire(vectors), ids=ids,
                 micro_batch=record.micro_batch, rank=record.rank, columns=_columns(record, space, rows),
                 sent_at=record.sent_at)


def _columns(record: StepRecord, space: str, rows: list[_Row]) -> dict[str, list]:
    """Per-row metadata, one list per key: prompt, loss, timestep (LoRA) and layer."""
    batch = len(record.keys) if record.keys else None
    indices = [row.key_index % batch if batch else row.key_index for row in rows]
    columns: dict[str, list] = {}
    if record.prompts:
        columns["prompt"] = _pick(record.prompts, indices)
    loss, sample_losses = record.loss, record.sample_losses
    step_loss = loss[0] if loss is not None and len(loss) == 1 else None
    if sample_losses is not None and len(sample_losses) != 1:
        columns["loss"] = _pick(sample_losses, indices, step_loss)
    elif step_loss is not None:
        columns["loss"] = [step_loss] * len(indices)
    if space == "lora" and record.timesteps is not None:
        columns["timestep"] = _pick(record.timesteps, indices)
    if space == "lora" or len({row.label for row in rows}) > 1:
        columns["layer"] = [row.label for row in rows]
    return columns


def _pick(values: list, indices: list[int], default=None) -> list:
    """values[i] for each index, ``default`` past the end."""
    return [values[i] if i < len(values) else default for i in indices]


# ---------------------------------------------------------------------------- the link to the relay

def encode_records(records: Sequence[StepRecord]) -> list[Any]:
    """[header, payload] for a batch of steps: their fields as JSON, all their rows as one float32 array."""
    return link_message([encode_step(*record_link_step(record)) for record in records])


def encode_step(header: tuple, arrays: Sequence[np.ndarray]) -> tuple[tuple, np.ndarray]:
    """One step made ready for the link: its ``step_header`` as it is and its captures' arrays (in header
    order) as one fresh float32 array. The header is a tuple of numbers, strings and tuples, which the
    garbage collector stops tracking within its first young collections, and a numpy array is not tracked,
    so steps waiting for their batch do not make Python's full collections come sooner. They are made JSON
    together when the batch is sent: one encoder call, warm, instead of one per step right after the
    step's forward, when each line of Python costs several times as much."""
    return header, np.concatenate(arrays, axis=None, dtype=np.float32) if arrays else _EMPTY


def link_message(steps: Sequence[tuple[tuple, np.ndarray]]) -> list[Any]:
    """[header, payload] of a link message holding ``encode_step`` results (extra fields are ignored)."""
    header = _LINK_JSON.encode({"v": LINK_VERSION, "steps": [step[0] for step in steps]}).encode()
    payloads = [step[1] for step in steps]
    return [header, payloads[0] if len(payloads) == 1 else b"".join(payloads) if payloads else _EMPTY]


def record_link_step(record: StepRecord) -> tuple[tuple, list[np.ndarray]]:
    captures = [capture_header(c.space, c.label, c.first_key, c.vectors.shape, c.order, c.keep)
                for c in record.captures]
    return (step_header(record.run, record.rank, record.step, record.micro_batch, record.keys, record.prompts,
                        record.loss, record.timesteps, record.sample_losses, record.sent_at, captures),
            [c.vectors for c in record.captures])


def step_header(run: str, rank: int, step: int, micro_batch: int, keys: Sequence[str] | None,
                prompts: Sequence[str] | None, loss: list[float] | None, timesteps: list[float] | None,
                sample_losses: list[float] | None, sent_at: float, captures: Sequence[Sequence]) -> tuple:
    """A step on the link: its ``STEP_FIELDS`` in order, then its ``capture_header``s (as tuples)."""
    return (run, rank, step, micro_batch, None if keys is None else tuple(keys),
            None if prompts is None else tuple(prompts), _finite(loss), _finite(timesteps), _finite(sample_losses),
            sent_at, *map(tuple, captures))


def capture_header(space: str, label: str, first_key: int, shape: tuple[int, ...], order: int,
                   keep: tuple[int, ...] | None, scale: float = 1.0, weights: int | None = None) -> list:
    """A capture on the link, its ``CAPTURE_FIELDS`` in order (a list, not an object: a step's header
    is encoded on the training thread). Its payload: its sums (``shape``, rows first; a 1-D array is
    one row), then, if ``weights`` is a length, a (rows, weights) float32 block of sequence weights.
    The vectors are ``scaled_rows`` of them: the tap sends sums and lets the relay divide."""
    rows, dim = (shape[0], math.prod(shape[1:])) if len(shape) > 1 else (1, shape[0])
    return [space, label, first_key, rows, dim, order, tuple(keep) if keep is not None else None, scale, weights]


def scaled_rows(sums: np.ndarray, rows: int, scale: float, weights: np.ndarray | None = None) -> np.ndarray:
    """(rows, dim) float32 vectors from pooled sums: flattened, times ``scale``, and divided row by row by
    the sum of the row's ``weights`` (rows, length) if given (a row whose weights sum to 0 stays 0)."""
    vectors = sums.reshape(rows, -1)
    if weights is not None:
        totals = weights.sum(axis=1, dtype=np.float32)
        totals[totals == 0] = 1.0
        return (vectors * np.float32(scale)) / totals[:, None]
    return vectors * np.float32(scale) if scale != 1.0 else vectors


def decode_records(header_bytes: bytes, payload: bytes | memoryview) -> list[StepRecord]:
    """The records in a ``link_message`` (``encode_records`` makes one). Raises ValueError on anything malformed."""
    if len(header_bytes) > MAX_LINK_BYTES or len(payload) > MAX_LINK_BYTES:
        raise ValueError("link message too large")
    try:
        header = json.loads(header_bytes)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"unreadable link header: {exc}") from None
    if not isinstance(header, dict) or header.get("v") != LINK_VERSION:
        raise ValueError(f"link header is not a version-{LINK_VERSION} object")
    flat = np.frombuffer(payload, dtype=np.float32)
    records, start = [], 0
    for step in _list(header, "steps"):
        if not isinstance(step, list) or len(step) < len(STEP_FIELDS):
            raise ValueError(f"a link step is not a list of {', '.join(STEP_FIELDS)} and its captures")
        step, captured = dict(zip(STEP_FIELDS, step)), step[len(STEP_FIELDS):]
        captures = []
        for raw in captured:
            capture, size = _capture(raw, flat, start)
            captures.append(capture)
            start += size
        records.append(_record(step, captures))
    if start != flat.size:
        raise ValueError(f"link payload holds {flat.size} values, the captures {start}")
    return records


def _record(step: dict, captures: list[CaptureRows]) -> StepRecord:
    return StepRecord(run=_text(step, "run", MAX_NAME_CHARS), rank=_int(step, "rank"), step=_int(step, "step"),
                      micro_batch=_int(step, "micro_batch"), keys=_strings(step, "keys", MAX_NAME_CHARS),
                      prompts=_strings(step, "prompts", MAX_TEXT_CHARS), captures=captures,
                      loss=_numbers(step, "loss"), timesteps=_numbers(step, "timesteps"),
                      sample_losses=_numbers(step, "sample_losses"), sent_at=_float(step, "sent_at"))


def _capture(raw: Any, flat: np.ndarray, start: int) -> tuple[CaptureRows, int]:
    """The capture and how many payload values it took."""
    if not isinstance(raw, list) or len(raw) != len(CAPTURE_FIELDS):
        raise ValueError(f"a link capture is not a list of {', '.join(CAPTURE_FIELDS)}")
    raw = dict(zip(CAPTURE_FIELDS, raw))
    space, rows, dim, scale = raw.get("space"), _int(raw, "rows"), _int(raw, "dim"), _float(raw, "scale")
    length = raw.get("weights")
    if space not in SPACES:
        raise ValueError(f"link capture space {space!r} is not one of {SPACES}")
    if length is not None and not (_is_int(length) and length >= 1):
        raise ValueError("link capture weights must be a sequence length")
    size = rows * (dim + (length or 0))
    if rows < 0 or dim < 1 or start + size > flat.size:
        raise ValueError(f"link capture of {rows} x {dim} does not fit the payload")
    keep = raw.get("keep")
    if keep is not None and not (isinstance(keep, list) and all(_is_int(k) and 0 <= k < rows for k in keep)):
        raise ValueError("link capture keep must list row offsets")
    if not math.isfinite(scale):
        raise ValueError("link capture scale must be finite")
    sums = flat[start:start + rows * dim]
    weights = flat[start + rows * dim:start + size].reshape(rows, length) if length else None
    capture = CaptureRows(space, _text(raw, "label", MAX_NAME_CHARS), _int(raw, "first_key"),
                          scaled_rows(sums, rows, scale, weights), _int(raw, "order"),
                          tuple(keep) if keep is not None else None)
    return capture, size


def _finite(values: list[float] | None) -> tuple[float | None, ...] | None:
    return None if values is None else tuple(v if math.isfinite(v) else None for v in values)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int(header: dict, key: str) -> int:
    value = header.get(key)
    if not _is_int(value):
        raise ValueError(f"link field {key!r} must be an integer")
    return value


def _float(header: dict, key: str) -> float:
    value = header.get(key)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ValueError(f"link field {key!r} must be a number")
    return float(value)


def _text(header: dict, key: str, limit: int) -> str:
    value = header.get(key)
    if not isinstance(value, str) or len(value) > limit:
        raise ValueError(f"link field {key!r} must be a string of at most {limit} characters")
    return value


def _list(header: dict, key: str) -> list:
    value = header.get(key)
    if not isinstance(value, list):
        raise ValueError(f"link field {key!r} must be a list")
    return value


def _strings(header: dict, key: str, limit: int) -> list[str] | None:
    if header.get(key) is None:
        return None
    values = _list(header, key)
    if not all(isinstance(v, str) and len(v) <= limit for v in values):
        raise ValueError(f"link field {key!r} must list strings of at most {limit} characters")
    return values


def _numbers(header: dict, key: str) -> list[float] | None:
    if header.get(key) is None:
        return None
    values = _list(header, key)
    if not all(v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in values):
        raise ValueError(f"link field {key!r} must list numbers")
    return [math.nan if v is None else float(v) for v in values]
