"""Typed point columns: a map's numeric columns as base64 arrays inside the JSON reply.

A snapshot of 3 x 10k points is mostly numbers (x, y, step, loss, timestep), and reading a list of
floats back from JSON text costs far more than the rest of the reply; its text columns repeat a few
values many times (a clip's key and prompt on every LoRA row, a handful of layer names). Asked with
``"encoding": "typed"``, the collector sends
- each numeric column as ``{"dtype": "f8" or "i8", "bdata": <base64 of little-endian values>}`` (the
  shape Plotly's typed arrays use), missing floats as NaN;
- each text column as ``{"dtype": "i4", "bdata": <codes>, "values": [its distinct texts]}``, a code
  being an index into ``values`` and -1 standing for a missing value.
A column with nothing to gain (all missing, or values of other kinds) stays a list.
``decode_points`` turns such columns back into the plain lists a ``"lists"`` reply holds, value for
value: float64 and int64 carry every number JSON would.
Shared by the collector (encode) and the dashboard's client (decode); plain functions.
"""
from __future__ import annotations

import base64
import math
from typing import Any, Mapping, Sequence

import numpy as np

LISTS, TYPED = "lists", "typed"
ENCODINGS = (LISTS, TYPED)
FLOAT_COLUMNS = ("x", "y", "loss", "timestep")  # None travels as NaN
INT_COLUMNS = ("step",)
TEXT_COLUMNS = ("id", "layer", "prompt", "audio", "run")
_DTYPES = {"f8": np.dtype("<f8"), "i8": np.dtype("<i8"), "i4": np.dtype("<i4")}


def encoding_arg(request: Mapping[str, Any]) -> str:
    """The request's ``encoding`` (default "lists"); ValueError naming the choices otherwise."""
    encoding = request.get("encoding", LISTS)
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {', '.join(ENCODINGS)}, not {encoding!r}")
    return encoding


def encode_points(points: Mapping[str, Sequence], encoding: str = TYPED) -> dict:
    """``points`` (column name -> list) with the numeric columns typed when ``encoding`` is "typed".
    An int column holding anything but ints stays a list, as does a float column holding text."""
    if encoding == LISTS:
        return dict(points)
    out = dict(points)
    for name in FLOAT_COLUMNS:  # a column of nothing but None stays a list: its nulls cost little to read
        if name in out and _all_numbers(out[name], allow_none=True) and any(v is not None for v in out[name]):
            out[name] = _typed(np.array([math.nan if v is None else v for v in out[name]], "<f8"), "f8")
    for name in INT_COLUMNS:
        if name in out and _all_ints(out[name]):
            out[name] = _typed(np.array(out[name], "<i8"), "i8")
    for name in TEXT_COLUMNS:
        if name in out:
            out[name] = _coded(out[name])
    return out


def decode_points(points: Mapping[str, Any]) -> dict:
    """``points`` with every typed column back as a list (NaN floats as None); lists pass through.
    ValueError for a typed column that is not valid."""
    out = dict(points)
    for name, column in points.items():
        if isinstance(column, Mapping):
            out[name] = _decoded(name, column)
    return out


def _typed(array: np.ndarray, dtype: str) -> dict:
    return {"dtype": dtype, "bdata": base64.b64encode(array.tobytes()).decode("ascii")}


def _coded(values: Sequence) -> Any:
    """A text column as codes into its distinct values; the list itself when it holds anything but text."""
    distinct = set(values)
    distinct.discard(None)
    if not distinct or not all(isinstance(v, str) for v in distinct):
        return values
    names = sorted(distinct)
    code = {name: i for i, name in enumerate(names)}
    code[None] = -1
    return {**_typed(np.fromiter(map(code.__getitem__, values), "<i4", len(values)), "i4"), "values": names}


def _decoded(name: str, column: Mapping[str, Any]) -> list:
    dtype = _DTYPES.get(column.get("dtype"))
    data = column.get("bdata")
    if dtype is None or not isinstance(data, str):
        raise ValueError(f"point column {name!r}: a typed column needs dtype f8, i8 or i4 and base64 bdata")
    raw = base64.b64decode(data)
    if len(raw) % dtype.itemsize:
        raise ValueError(f"point column {name!r}: {len(raw)} bytes is not a whole number of {dtype.name} values")
    array = np.frombuffer(raw, dtype)
    if "values" in column:
        return _texts(name, array, column["values"])
    values = array.tolist()
    if dtype.kind == "f" and np.isnan(array).any():
        values = [None if v != v else v for v in values]
    return values


def _texts(name: str, codes: np.ndarray, values: Any) -> list:
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ValueError(f"point column {name!r}: values must be a list of texts")
    if codes.size and (codes.min() < -1 or codes.max() >= len(values)):
        raise ValueError(f"point column {name!r}: a code is outside -1 .. {len(values) - 1}")
    table = values + [None]  # code -1 indexes the None at the end
    return list(map(table.__getitem__, codes.tolist()))


def _all_numbers(values: Sequence, allow_none: bool) -> bool:
    return all((v is None and allow_none) or (isinstance(v, (int, float)) and not isinstance(v, bool))
               for v in values)


def _all_ints(values: Sequence) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) and -2**63 <= v < 2**63 for v in values)
