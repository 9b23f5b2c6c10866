"""Which audio file a selected clip may be played from: the rules of dashboard/audio.py and its cache."""
from __future__ import annotations

import os
import wave

import numpy as np
import pytest
from acestep_viz.dashboard.audio import NO_ROOTS, audio_type, index_names, resolve
from acestep_viz.dashboard.audio_route import AudioLibrary
from acestep_viz.dashboard.selection import details
from acestep_viz.trainer_plugin.batch_frames import build_frames
from acestep_viz.trainer_plugin.demo.audio_files import write_v1_audio, write_wav
from acestep_viz.trainer_plugin.step_record import CaptureRows, StepRecord
from acestep_viz.trainer_plugin.tap import metadata_audio

from acestep_viz.wire import MAX_PATH_CHARS, decode, encode


def touch(path, data: bytes = b"RIFF....WAVE") -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    return str(path)


def index_of(*roots) -> dict:
    return index_names(os.path.join(folder, name) for root in roots for folder, _, names in os.walk(root)
                       for name in names)


@pytest.fixture
def library_dirs(tmp_path):
    root, outside = tmp_path / "songs", tmp_path / "private"
    touch(root / "rock" / "riff_01.wav")
    touch(root / "jazz-00.wav")
    touch(root / "notes_01.txt")
    touch(outside / "secret.wav")
    touch(outside / "passwd")
    return str(root), str(outside)


def test_without_roots_nothing_is_served_and_the_reason_names_the_setting(library_dirs):
    root, _ = library_dirs
    assert resolve("riff_01", os.path.join(root, "rock", "riff_01.wav"), (), {}) == (None, NO_ROOTS)


def test_a_reported_path_under_a_root_is_served_as_its_real_path(library_dirs):
    root, _ = library_dirs
    reported = os.path.join(root, "rock", "..", "rock", "riff_01.wav")
    found = resolve("anything", reported, (root,), {})
    assert found.path == os.path.realpath(os.path.join(root, "rock", "riff_01.wav"))


def test_a_relative_reported_path_is_looked_for_under_each_root(library_dirs):
    root, _ = library_dirs
    assert resolve("x", "rock/riff_01.wav", (root,), {}).path == os.path.realpath(os.path.join(root, "rock",
                                                                                              "riff_01.wav"))


def test_a_reported_path_outside_the_roots_is_refused_with_the_reason(library_dirs):
    root, outside = library_dirs
    secret = os.path.join(outside, "secret.wav")
    found = resolve("secret", secret, (root,), index_of(root))
    assert found.path is None
    assert found.reason == f"{secret} is outside the audio roots"


@pytest.mark.parametrize("reported", ["../private/secret.wav", "rock/../../private/secret.wav"])
def test_dot_dot_cannot_leave_a_root(library_dirs, reported):
    root, _ = library_dirs
    found = resolve("secret", reported, (root,), index_of(root))
    assert found.path is None and "outside the audio roots" in found.reason


def test_a_symlink_inside_a_root_that_points_outside_is_refused(library_dirs):
    root, outside = library_dirs
    os.symlink(os.path.join(outside, "secret.wav"), os.path.join(root, "innocent.wav"))
    os.symlink(outside, os.path.join(root, "linked-folder"))
    for reported in (os.path.join(root, "innocent.wav"), os.path.join(root, "linked-folder", "secret.wav")):
        assert resolve("innocent", reported, (root,), index_of(root)).path is None
    # by key too: the listing may name the link, but its target is outside
    assert resolve("innocent", None, (root,), index_of(root)).path is None


def test_a_symlinked_root_is_followed_once_at_the_root(tmp_path, library_dirs):
    root, _ = library_dirs
    alias = tmp_path / "alias"
    os.symlink(root, alias)
    assert resolve("jazz-00", None, (str(alias),), index_of(root)).path == os.path.realpath(
        os.path.join(root, "jazz-00.wav"))


def test_only_audio_files_are_served(library_dirs):
    root, _ = library_dirs
    found = resolve("notes_01", os.path.join(root, "notes_01.txt"), (root,), index_of(root))
    assert found.path is None
    assert audio_type("a.WAV") == "audio/wav" and audio_type("a.flac") == "audio/flac" and audio_type("a.txt") is None


def test_a_clip_is_found_by_key_at_any_depth(library_dirs):
    root, _ = library_dirs
    found = resolve("riff_01", None, (root,), index_of(root))
    assert found.path == os.path.realpath(os.path.join(root, "rock", "riff_01.wav"))


def test_a_key_that_is_a_file_name_finds_that_file(library_dirs):
    root, _ = library_dirs  # ACE-Step 1.5's clip keys are file names such as "jazz-00.wav"
    assert resolve("jazz-00.wav", None, (root,), index_of(root)).path.endswith("jazz-00.wav")


def test_a_missing_clip_says_which_name_was_looked_for_and_where(library_dirs):
    root, outside = library_dirs
    found = resolve("nowhere_07", None, (root, outside), index_of(root, outside))
    assert found.path is None
    assert found.reason == f"no audio file named nowhere_07.* under {root}, {outside}"


def test_a_reported_path_outside_the_roots_still_lets_the_key_find_the_file(library_dirs):
    root, outside = library_dirs
    touch(os.path.join(root, "secret.wav"))
    found = resolve("secret", os.path.join(outside, "secret.wav"), (root,), index_of(root))
    assert found.path == os.path.realpath(os.path.join(root, "secret.wav"))


@pytest.mark.parametrize("key", ["../private/secret", "..", "/etc/passwd", "rock/riff_01", "secret\0"])
def test_a_key_with_a_folder_part_never_names_a_file(library_dirs, key):
    root, outside = library_dirs
    assert resolve(key, None, (root,), index_of(root, outside)).path is None


def test_the_library_lists_a_root_again_for_a_clip_added_later(tmp_path):
    now = [0.0]
    library = AudioLibrary([str(tmp_path)], refresh_s=10, clock=lambda: now[0])
    assert library.find("run", "late_00", None).path is None
    touch(tmp_path / "late_00.wav")
    assert library.find("run", "late_00", None).path is None  # listed a moment ago: not listed again yet
    now[0] = 11.0
    assert library.find("run", "late_00", None).path == os.path.realpath(tmp_path / "late_00.wav")


def test_the_library_lists_at_most_max_files_per_root(tmp_path):
    for i in range(5):
        touch(tmp_path / f"clip_{i}.wav")
    library = AudioLibrary([str(tmp_path)], max_files=3)
    found = [library.find("run", f"clip_{i}", None).path is not None for i in range(5)]
    assert found == [True, True, True, False, False]


def test_the_library_remembers_the_reported_path_a_card_was_drawn_with(tmp_path):
    touch(tmp_path / "a" / "song.wav")
    library = AudioLibrary([str(tmp_path)])
    library.find("run", "clip-1", str(tmp_path / "a" / "song.wav"))
    assert library.reported_path("run", "clip-1") == str(tmp_path / "a" / "song.wav")
    assert library.reported_path("run", "clip-2") is None  # no collector to ask


def test_the_details_row_carries_the_clips_reported_path():
    latent = {"id": ["a", "b"], "step": [0, 0], "loss": [None, None], "layer": [None, None],
              "prompt": ["x", "y"], "audio": [None, "/songs/b.wav"]}
    lora = {"id": ["b"], "step": [1], "loss": [0.5], "layer": ["l0"], "prompt": [None]}  # no audio column
    rows = details({"latent": latent, "lora": lora}, {"a", "b"})
    assert [row["audio"] for row in rows] == [None, "/songs/b.wav"]


def test_1_5_metadata_gives_each_clip_its_audio_path():
    metadata = [{"filename": "a.wav", "audio_path": "/data/a.wav"}, {"filename": "b.wav"},
                {"audio_path": "x" * (MAX_PATH_CHARS + 1)}]
    assert metadata_audio(metadata) == ["/data/a.wav", None, None]
    assert metadata_audio([{"filename": "a.wav"}]) is None
    assert metadata_audio("not a list") is None


def test_the_audio_path_travels_with_latent_rows_only():
    vectors = np.ones((2, 4), np.float32)
    record = StepRecord(run="r", rank=0, step=3, micro_batch=0, keys=["a.wav", "b.wav"], prompts=["p", "q"],
                        captures=[CaptureRows(space, "batch", 0, vectors) for space in ("latent", "prompt")],
                        audio=["/data/a.wav", None])
    frames = {frame.space: decode(encode(frame)) for frame in build_frames(record, errors=None)}
    assert frames["latent"].columns["audio"] == ["/data/a.wav", None]
    assert "audio" not in frames["prompt"].columns


def test_the_v1_demo_writes_playable_wavs_named_by_clip_key(tmp_path):
    paths = write_v1_audio(str(tmp_path), n_clips=3)
    assert [os.path.basename(p) for p in paths] == ["lofi_00.wav", "metal_00.wav", "ambient_00.wav"]
    with wave.open(paths[0]) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 4000)
        assert w.getnframes() >= 4000  # at least the twin's shortest clip, 1 s
        samples = np.frombuffer(w.readframes(w.getnframes()), "<i2")
    assert samples.std() > 1000  # a song, not silence


def test_write_wav_clips_out_of_range_samples(tmp_path):
    write_wav(str(tmp_path / "x.wav"), np.array([[2.0, -2.0], [0.0, 0.5]]), 8000)
    with wave.open(str(tmp_path / "x.wav")) as w:
        assert np.frombuffer(w.readframes(2), "<i2").tolist() == [32767, 0, -32767, 16383]


def test_the_1_5_twin_sends_each_clips_audio_path_once_with_its_latent_row(tmp_path):
    from acestep_viz.trainer_plugin.demo.acestep15.run import run_demo
    from acestep_viz.trainer_plugin.publisher import MemoryPublisher

    publisher = MemoryPublisher()
    run_demo(steps=4, run="listen-15", monitor_options={"publisher": publisher}, audio_dir=str(tmp_path))
    latent = [frame for frame in publisher.frames if frame.space == "latent"]
    sent = [(clip, path) for frame in latent for clip, path in zip(frame.ids, frame.columns["audio"])]
    assert len(sent) == len({clip for clip, _ in sent}) == 30  # every clip once (6 genres x 5, one epoch)
    for clip, path in sent:
        assert path == str(tmp_path / clip) and os.path.isfile(path)
        assert resolve(clip, path, (str(tmp_path),), {}).path == os.path.realpath(path)
    assert all("audio" not in frame.columns for frame in publisher.frames if frame.space != "latent")


def test_audio_root_repeats_on_the_command_line_and_splits_in_the_environment(tmp_path, monkeypatch):
    from acestep_viz.dashboard import options

    from acestep_viz.cli import build_parser
    from acestep_viz.settings import SettingError, resolve

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    for command in ("dashboard", "up"):
        flags = vars(build_parser().parse_args([command, "--audio-root", str(a), "--audio-root", str(b)]))
        assert resolve([options.AUDIO_ROOT], flags, {})["audio_root"] == (str(a), str(b))
    environ = {"ACESTEP_VIZ_AUDIO_ROOT": f"{a}{os.pathsep}{b}"}
    assert resolve([options.AUDIO_ROOT], {}, environ)["audio_root"] == (str(a), str(b))
    assert resolve([options.AUDIO_ROOT], {}, {})["audio_root"] == ()
    with pytest.raises(SettingError, match=f"--audio-root='{tmp_path / 'missing'}': no such folder"):
        resolve([options.AUDIO_ROOT], {"audio_root": [str(a), str(tmp_path / "missing")]}, {})


def test_up_demo_passes_the_demo_audio_folder_to_the_dashboard_and_the_demo(tmp_path, monkeypatch):
    from acestep_viz import launcher

    collector = {"allow_remote": False, "curve_dir": None, "ingest": "tcp://127.0.0.1:1", "query": "tcp://127.0.0.1:2",
                 "store": str(tmp_path / "store"), "buffer_size": 1, "n_neighbors": 1, "prompt_variants_per_clip": 1,
                 "projection_interval_s": 1, "max_fit_points": 1, "history_size": 1, "refit_new_share": 1,
                 "refit_interval_s": 1, "retention_days": 1, "retention_max_mb": 1, "numba_cache_dir": "x"}
    ui = {"host": "127.0.0.1", "port": 8050, "interval": 5, "steps": 3, "model": "acestep15",
          "audio_root": ("/songs",)}
    stack = launcher.Stack(collector, ui, demo=True)
    spawned = {}
    monkeypatch.setattr(stack, "_spawn", lambda name, *args: spawned.setdefault(name, args))
    monkeypatch.setattr(stack, "_wait", lambda name, ready: None)
    stack.start()
    demo_audio = str(tmp_path / "store" / "demo-audio")
    assert os.path.isdir(demo_audio)  # made before the dashboard checks its roots
    dashboard = spawned["dashboard"]
    assert [dashboard[i + 1] for i, arg in enumerate(dashboard) if arg == "--audio-root"] == ["/songs", demo_audio]
    assert spawned["demo"][-2:] == ("--audio-dir", demo_audio)


def test_the_details_card_has_a_player_or_the_reason_per_clip(tmp_path):
    from acestep_viz.dashboard.view_callbacks import details_card

    touch(tmp_path / "metal_000.wav")
    points = {"x": [0.0, 1.0], "y": [0.0, 1.0], "id": ["metal_000", "folk_001"], "step": [0, 0],
              "prompt": ["metal", "folk"]}
    snapshot = {"run": "r 1", "spaces": {"latent": {"points": points}}}
    library = AudioLibrary([str(tmp_path)], url_prefix="/viz/")
    card = details_card(snapshot, frozenset({"metal_000", "folk_001"}), library)
    table_body = card.children[1].children[1]
    folk, metal = (row.children[-1].children for row in table_body.children)  # rows in key order
    assert type(metal).__name__ == "Audio" and metal.src == "/viz/audio?run=r+1&clip=metal_000"
    assert metal.preload == "none" and metal.controls is True
    assert type(folk).__name__ == "Small" and folk.children == f"no audio file named folk_001.* under {tmp_path}"
    without = details_card(snapshot, frozenset({"folk_001"}), AudioLibrary())
    assert without.children[1].children[1].children[0].children[-1].children.children == "no --audio-root set"
