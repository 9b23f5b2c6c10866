import numpy as np
from acestep_viz.collector.exports import SpaceExport, write_npz, write_tensorboard


def spaces():
    meta = [{"id": "metal_01", "step": 3, "layer": "blocks.0", "loss": 0.5, "prompt": "heavy\tmetal\nfast"},
            {"id": "jazz_02", "step": 4, "layer": None, "loss": None, "prompt": "<b>jazz</b>"}]
    vectors = np.array([[1, 2, 3], [4, 5, 6]], np.float16)
    coords = np.array([[0.5, -1.0], [np.nan, np.nan]], np.float32)
    return [SpaceExport("lora", vectors, coords, meta)]


def test_npz_round_trip_without_pickle(tmp_path):
    path = write_npz(tmp_path / "run.npz", spaces())
    with np.load(path, allow_pickle=False) as data:
        assert data["lora_vectors"].tolist() == [[1, 2, 3], [4, 5, 6]]
        assert data["lora_id"].tolist() == ["metal_01", "jazz_02"]
        assert data["lora_step"].tolist() == [3, 4] and np.isnan(data["lora_loss"][1])
        assert np.isnan(data["lora_coords"][1]).all() and data["lora_coords"][0].tolist() == [0.5, -1.0]


def test_tensorboard_projector_files(tmp_path):
    files = write_tensorboard(tmp_path, spaces())
    config = (tmp_path / "projector_config.pbtxt").read_text()
    assert 'tensor_path: "lora/tensors.tsv"' in config and 'metadata_path: "lora/metadata.tsv"' in config
    rows = (tmp_path / "lora" / "tensors.tsv").read_text().splitlines()
    assert [r.split("\t") for r in rows] == [["1", "2", "3"], ["4", "5", "6"]]
    meta = (tmp_path / "lora" / "metadata.tsv").read_text().splitlines()
    assert len(meta) == 3 and meta[0].startswith("id\tstep")  # a header and one line per row
    assert "heavy metal fast" in meta[1]
    assert len(files) == 3


def test_an_export_reply_becomes_one_download_when_its_files_are_on_this_machine(tmp_path):
    import io
    import zipfile

    from acestep_viz.dashboard.export_callbacks import export_download

    single = tmp_path / "run.npz"
    single.write_bytes(b"npz bytes")
    assert export_download({"run": "my run", "files": [str(single)]}, "npz") == ("my_run.npz", b"npz bytes")
    (tmp_path / "a.tsv").write_text("1\t2\n")
    (tmp_path / "b.tsv").write_text("3\t4\n")
    name, content = export_download({"run": "r", "files": [str(tmp_path / "a.tsv"), str(tmp_path / "b.tsv")]},
                                    "tensorboard")
    assert name == "r-tensorboard.zip"
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        assert sorted(archive.namelist()) == ["a.tsv", "b.tsv"]
    elsewhere = {"run": "r", "files": ["/on/the/collectors/machine/run.npz"]}
    assert export_download(elsewhere, "npz") is None
