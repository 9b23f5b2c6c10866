import numpy as np
from acestep_viz.collector.quality import cap_rows, latest_by_key, neighbour_overlap, relative_drift


def test_neighbour_overlap_is_high_for_a_faithful_map_and_low_for_noise():
    rng = np.random.default_rng(0)
    plane = rng.normal(size=(200, 2))
    embedded = np.hstack([plane, np.zeros((200, 30))])  # the same points in 32-D
    assert neighbour_overlap(embedded, plane) > 0.95
    assert neighbour_overlap(embedded, rng.normal(size=(200, 2))) < 0.2
    assert neighbour_overlap(embedded[:5], plane[:5]) is None


def test_drift_compares_each_clip_and_layer_with_its_first_vector():
    first = {"a|l0": np.array([1.0, 0.0]), "b|l0": np.array([0.0, 2.0])}
    meta = [{"id": "a", "layer": "l0"}, {"id": "a", "layer": "l0"}, {"id": "c", "layer": "l0"}]
    current = latest_by_key(np.array([[9.0, 9.0], [1.5, 0.0], [5.0, 5.0]]), meta)
    assert relative_drift(first, current) == 0.5  # only clip a is in both; its newest row counts
    assert relative_drift(first, {"z|l0": np.ones(2)}) is None


def test_capping_keeps_every_clip_and_prefers_new_rows():
    meta = [{"id": f"clip{i % 5}", "step": i} for i in range(100)]
    rows = cap_rows(meta, cap=20)
    assert len(rows) == 20 and list(rows) == sorted(rows)
    assert {meta[i]["id"] for i in rows} == {f"clip{i}" for i in range(5)}
    assert min(meta[i]["step"] for i in rows) >= 80
    assert len(cap_rows(meta, cap=200)) == 100
