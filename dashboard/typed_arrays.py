"""Numeric figure columns as Plotly typed-array specs: ``{"dtype": "f4", "bdata": <base64>}``.

Plotly.js (2.28 and later) decodes these itself; they are about a third of the JSON a list of
floats takes, and Python encodes them without visiting each number as text. Coordinates and
continuous colour values need no more than float32: a map is drawn at screen precision.

Dash serialises callback replies with plotly's JSON encoder, which parses and writes the whole
reply a second time whenever its text contains "NaN" or "Infinity" (to turn those into null).
Base64 text contains "NaN" by chance about once per 260,000 characters, so most figures of 10k
points would pay that twice. A float column whose base64 spells one of those words gets the
lowest mantissa bit under the word flipped (a change of at most 2^-15 of the value, far below a
pixel) until it spells neither.
"""
from __future__ import annotations

import base64
import math
from typing import Any, Mapping, Sequence

import numpy as np

FLOAT = "f4"
INT = "i4"
_DTYPES = {FLOAT: np.dtype("<f4"), INT: np.dtype("<i4"), "f8": np.dtype("<f8"), "i2": np.dtype("<i2"),
           "u1": np.dtype("<u1"), "i1": np.dtype("<i1"), "u2": np.dtype("<u2"), "u4": np.dtype("<u4")}
JSON_WORDS = ("NaN", "Infinity")  # what makes plotly's encoder parse and write a reply again
MAX_NUDGES = 1000


def typed_array(values: Sequence[Any], dtype: str | None = FLOAT) -> dict:
    """``values`` as a typed-array spec; for floats, None (a missing value) becomes NaN, which Plotly skips.
    ``dtype`` None: INT when every value is an int (category codes), else FLOAT."""
    if dtype is None:
        dtype = INT if np.asarray(values).dtype.kind in "iub" and len(values) else FLOAT
    array = np.asarray(values, dtype=_DTYPES[dtype])  # numpy reads None as NaN for a float dtype
    raw = bytearray(array.tobytes())
    text = _base64(raw)
    if array.dtype.kind == "f":
        for _ in range(MAX_NUDGES):
            found = _json_word(text)
            if found is None:
                break
            _flip_least_bit(raw, *found, array.dtype.itemsize)
            text = _base64(raw)
    return {"dtype": dtype, "bdata": text}


def _base64(raw: bytes | bytearray) -> str:
    return base64.b64encode(raw).decode("ascii")


def _json_word(text: str) -> tuple[int, int] | None:
    """(position, length) of the first of JSON_WORDS in ``text``, or None."""
    hits = [(text.find(word), len(word)) for word in JSON_WORDS]
    hits = [hit for hit in hits if hit[0] >= 0]
    return min(hits) if hits else None


def _flip_least_bit(raw: bytearray, position: int, length: int, itemsize: int) -> None:
    """Flip, among the bits behind base64 characters [position, position + length), the one that
    changes its little-endian float the least (never a sign or exponent bit: see the module's note)."""
    first, last = 6 * position, 6 * (position + length) - 1  # bit offsets, most significant bit first
    best = None
    for byte in range(first // 8, last // 8 + 1):
        bit = min(8 * byte + 7, last)  # the least significant bit of this byte under the word
        weight = 8 * (byte % itemsize) + (8 * byte + 7 - bit)
        if best is None or weight < best[0]:
            best = (weight, byte, 8 * byte + 7 - bit)
    _, byte, shift = best
    raw[byte] ^= 1 << shift


def is_typed_array(value: Any) -> bool:
    return isinstance(value, Mapping) and isinstance(value.get("dtype"), str) and "bdata" in value


def decoded(value: Any) -> list:
    """A figure column as a plain list, whether it is a typed-array spec or already a list; NaN reads as None."""
    if not is_typed_array(value):
        return list(value)
    array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=_DTYPES[value["dtype"]])
    if array.dtype.kind == "f":
        return [None if math.isnan(v) else v for v in array.tolist()]
    return array.tolist()
