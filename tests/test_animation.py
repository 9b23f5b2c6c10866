import io
from types import SimpleNamespace

import numpy as np
import pytest
from acestep_viz.collector.animation import GAP, PLOT, SIDE, TOP, render_gif
from acestep_viz.collector.exports import write_gif
from PIL import Image


def frame(step, coords, row_steps=None):
    coords = np.asarray(coords, float)
    row_steps = row_steps if row_steps is not None else [step] * len(coords)
    return SimpleNamespace(step=step, coords=coords, meta=[{"id": f"c{i}", "step": s} for i, s in enumerate(row_steps)])


def history():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(40, 2))
    return {"latent": [frame(0, base)],
            "lora": [frame(0, base), frame(4, base * 2, [0] * 20 + [4] * 20), frame(4, base * 3), frame(9, base)],
            "prompt": [frame(2, base[:20])]}


def pictures(data: bytes) -> list[np.ndarray]:
    image = Image.open(io.BytesIO(data))
    out = []
    for i in range(image.n_frames):
        image.seek(i)
        out.append(np.asarray(image.convert("RGB"), int))
    return out


def panel_points(picture: np.ndarray, index: int) -> np.ndarray:
    """Where a panel has points: pixels far from the plot background."""
    left = GAP + index * (SIDE + GAP)
    crop = picture[TOP:TOP + SIDE, left:left + SIDE]
    return np.abs(crop - np.array(PLOT)).sum(axis=2) > 40


def test_one_picture_per_distinct_step_on_the_dark_page():
    frames = pictures(render_gif(history()))
    assert len(frames) == 4  # steps 0, 2, 4, 9
    assert np.abs(frames[0][2, 2] - np.array([0x11, 0x18, 0x27])).sum() <= 6  # the page, #111827
    assert panel_points(frames[0], 0).any() and not panel_points(frames[0], 2).any()  # no prompt map at step 0


def test_axes_are_fixed_so_an_unchanged_map_does_not_move():
    frames = pictures(render_gif(history()))
    # latent has one map (step 0): the same pixels in every picture; lora changes between steps 2 and 4
    assert all(np.array_equal(panel_points(f, 0), panel_points(frames[0], 0)) for f in frames)
    assert np.array_equal(panel_points(frames[1], 2), panel_points(frames[3], 2))
    assert not np.array_equal(panel_points(frames[1], 1), panel_points(frames[2], 1))


def test_nothing_projected_is_an_error_and_a_gif_file_is_written(tmp_path):
    with pytest.raises(ValueError, match="nothing to animate"):
        render_gif({"latent": [], "lora": [], "prompt": []})
    path, steps = write_gif(tmp_path / "exports" / "run.gif", history())
    assert steps == 4 and Image.open(path).n_frames == 4
