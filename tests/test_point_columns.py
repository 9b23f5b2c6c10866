"""Typed point columns: what the collector sends for "typed" decodes to exactly what "lists" holds."""
import base64
import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from acestep_viz.point_columns import decode_points, encode_points, encoding_arg

COLUMNS = {
    "x": [0.1234, -5.5, 1e6], "y": [1.0, 2.0, -3.0], "step": [0, 7, 2**40],
    "loss": [0.25, None, 0.1 + 0.2], "timestep": [None, None, 999.0],
    "id": ["clip_b", "clip_a", "clip_b"], "layer": [None, "blocks.0.q", "blocks.0.q"],
    "prompt": ["rock, loud", "jazz & <b>", "rock, loud"], "audio": [None, None, None],
}


def wire(points: dict) -> dict:
    """Through JSON, as the reply travels."""
    return json.loads(json.dumps(points))


def test_typed_columns_decode_to_the_lists_value_for_value():
    typed = wire(encode_points(COLUMNS, "typed"))
    assert decode_points(typed) == COLUMNS
    assert typed["x"]["dtype"] == "f8" and typed["step"]["dtype"] == "i8"
    assert typed["id"]["values"] == ["clip_a", "clip_b"]  # each text once
    assert typed["audio"] == [None, None, None]  # nothing to gain: stays a list


def test_lists_encoding_leaves_the_columns_alone():
    assert encode_points(COLUMNS, "lists") == COLUMNS
    assert decode_points(COLUMNS) == COLUMNS


def test_columns_of_other_kinds_stay_lists():
    odd = {"step": [1, "2"], "loss": ["high", 0.5], "id": ["a", 3]}
    assert encode_points(odd, "typed") == odd


@given(st.lists(st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False)), max_size=50),
       st.lists(st.one_of(st.none(), st.text(max_size=5)), max_size=50))
def test_any_column_round_trips(floats, texts):
    points = {"loss": floats, "prompt": texts}
    assert decode_points(wire(encode_points(points, "typed"))) == points


@pytest.mark.parametrize("column, message", [
    ({"dtype": "f2", "bdata": ""}, "dtype f8, i8 or i4"),
    ({"dtype": "f8", "bdata": base64.b64encode(b"abc").decode()}, "whole number"),
    ({"dtype": "i4", "bdata": base64.b64encode(np.array([5], "<i4").tobytes()).decode(), "values": ["a"]},
     "outside -1 .. 0"),
    ({"dtype": "i4", "bdata": "", "values": "abc"}, "list of texts"),
])
def test_bad_typed_columns_are_refused_with_the_reason(column, message):
    with pytest.raises(ValueError, match=message):
        decode_points({"x": column})


def test_unknown_encodings_are_refused():
    assert encoding_arg({}) == "lists" and encoding_arg({"encoding": "typed"}) == "typed"
    with pytest.raises(ValueError, match="encoding must be one of lists, typed"):
        encoding_arg({"encoding": "arrow"})
