import numpy as np
import pytest
from acestep_viz.collector.saved_maps import MapSaver, SavedMap, load_map, save_due, save_map
from acestep_viz.collector.state import CollectorState

from acestep_viz.wire import Frame


def a_map(n=3):
    return SavedMap([f"clip{i}" for i in range(n)], np.arange(n * 2, dtype=float).reshape(n, 2),
                    [{"id": f"clip{i}", "step": i, "prompt": "jazz"} for i in range(n)], step=n - 1,
                    seconds=0.5, projected_at=1700000000.0, quality={"neighbour_overlap": 0.8})


def test_a_saved_map_loads_back_without_pickle(tmp_path):
    path = tmp_path / "projections" / "lora.npz"
    save_map(path, a_map())
    loaded = load_map(path)
    assert loaded.keys == ["clip0", "clip1", "clip2"] and loaded.coords.tolist() == a_map().coords.tolist()
    assert loaded.meta == a_map().meta and loaded.step == 2 and loaded.quality == {"neighbour_overlap": 0.8}
    assert not list(path.parent.glob("*.tmp"))
    assert loaded.method == "pacmap"


def test_a_pca_map_stays_a_pca_map_after_a_restart(tmp_path):
    path = tmp_path / "latent.npz"
    small = a_map()
    small.method = "pca"
    save_map(path, small)
    assert load_map(path).method == "pca"
    state = CollectorState()
    state.accept(Frame(run="r", space="latent", step=0, ids=small.keys, meta=[{}] * 3,
                       vectors=np.ones((3, 4), np.float16)))
    assert state.restore("r", "latent", load_map(path)).method == "pca"


def test_a_corrupt_or_inconsistent_file_is_a_value_error(tmp_path):
    path = tmp_path / "latent.npz"
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ValueError):
        load_map(path)
    bad = a_map()
    bad.coords = bad.coords[:2]
    save_map(path, bad)
    with pytest.raises(ValueError, match="do not fit"):
        load_map(path)


def test_a_map_is_saved_at_most_once_per_interval_unless_forced():
    assert save_due(1, None, now=100.0, every_s=5.0, force=False)
    assert not save_due(2, (1, 100.0), now=102.0, every_s=5.0, force=False)
    assert save_due(2, (1, 100.0), now=105.0, every_s=5.0, force=False)
    assert save_due(2, (1, 100.0), now=101.0, every_s=5.0, force=True)
    assert not save_due(1, (1, 100.0), now=200.0, every_s=5.0, force=True)  # unchanged: nothing to write


def test_a_discarded_map_is_deleted(tmp_path):
    class Proj(SavedMap):
        version = 7

    saver = MapSaver(lambda run, space: tmp_path / run / f"{space}.npz")
    current = [("run-a", "lora", Proj(**vars(a_map())))]
    assert saver.save(lambda: current, now=0.0) == 1
    assert saver.save(lambda: current, now=100.0) == 0  # same version: nothing new
    saver.discard("run-a", ["lora"])
    assert not (tmp_path / "run-a" / "lora.npz").exists()
    assert saver.save(lambda: [], now=200.0) == 0
