"""The dashboard's audio route against a real collector and dashboard: a clip plays, nothing else leaks."""
from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from urllib.parse import quote

import numpy as np
import pytest
from acestep_viz.trainer_plugin.demo.audio_files import write_wav
from support import (
    CollectorProcess,
    DashboardProcess,
    ManagedProcess,
    free_port,
    projected_snapshot,
    send_frames,
    synthetic_frames,
    try_query,
    wait_for,
)

pytestmark = pytest.mark.slow

RUN = "listen-run"
TOKEN = "listen-token"
SECRET = b"TOP-SECRET-BYTES-" * 8
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def get(url: str, headers: dict | None = None) -> tuple[int, bytes, dict]:
    req = urllib.request.Request(url, headers={**AUTH, **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as reply:
            return reply.status, reply.read(), dict(reply.headers)
    except urllib.error.HTTPError as err:
        return err.code, err.read(), dict(err.headers)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    base = tmp_path_factory.mktemp("listen")
    root, private = base / "songs", base / "private"
    (root / "nested").mkdir(parents=True)
    private.mkdir()
    tone = np.sin(np.linspace(0, 2000, 16000))[None].repeat(2, 0) * 0.5
    write_wav(str(root / "nested" / "metal_000.wav"), tone, 8000)  # found by key
    write_wav(str(root / "reported-jazz.wav"), tone[:, :8000], 8000)  # the path jazz_001's trainer reported
    (private / "secret.wav").write_bytes(b"RIFF" + SECRET)
    (private / "passwd").write_bytes(SECRET)
    os.symlink(private / "secret.wav", root / "ambient_002.wav")  # a link out of the root
    frames = synthetic_frames(run=RUN, n_clips=12, steps=1)
    latent = frames[0]
    audio = [None] * latent.rows
    audio[latent.ids.index("jazz_001")] = str(root / "reported-jazz.wav")
    audio[latent.ids.index("techno_003")] = str(private / "secret.wav")  # reported, but outside the roots
    latent.columns["audio"] = audio
    with CollectorProcess(base / "store") as collector:
        send_frames(collector.ingest, frames)
        wait_for(lambda: projected_snapshot(collector.query, RUN, minimum=12), timeout=120)
        extra = ["--token", TOKEN, "--url-prefix", "/viz/", "--audio-root", str(root)]
        dashboard = DashboardProcess(collector.query, log_dir=base, extra_args=extra).start()
        try:  # started by hand: its own readiness check fetches "/" without the token
            url = dashboard.url + "viz/"
            wait_for(lambda: reachable(url), timeout=60)
            yield url, root, private
        finally:
            dashboard.stop()


def reachable(url: str) -> bool:
    try:
        return get(url)[0] == 200
    except urllib.error.URLError:  # not listening yet
        return False


def audio_url(url: str, clip: str, run: str = RUN) -> str:
    return f"{url}audio?run={quote(run)}&clip={quote(clip, safe='')}"


def test_a_clip_found_by_key_is_served_whole_and_by_range(served):
    url, root, _ = served
    status, body, headers = get(audio_url(url, "metal_000"))
    assert status == 200 and body == (root / "nested" / "metal_000.wav").read_bytes()
    assert headers["Content-Type"] == "audio/wav"
    status, part, headers = get(audio_url(url, "metal_000"), {"Range": "bytes=100-199"})
    assert status == 206 and part == body[100:200]  # the player can seek


def test_the_path_a_trainer_reported_is_served_when_under_a_root(served):
    url, root, _ = served
    status, body, _ = get(audio_url(url, "jazz_001"))
    assert status == 200 and body == (root / "reported-jazz.wav").read_bytes()


def test_the_token_guards_the_audio_route(served):
    url, _, _ = served
    req = urllib.request.Request(audio_url(url, "metal_000"))
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=30)
    assert refused.value.code == 401


def test_a_reported_path_outside_the_roots_is_refused_with_its_reason(served):
    url, _, private = served
    status, body, _ = get(audio_url(url, "techno_003"))
    assert status == 404 and SECRET not in body
    assert f"{private / 'secret.wav'} is outside the audio roots".encode() in body


@pytest.mark.parametrize("clip", ["ambient_002", "../private/secret", "../private/secret.wav", "..",
                                  "/etc/passwd", "PRIVATE/secret.wav", "nested/../../private/passwd"])
def test_clip_keys_that_try_to_leave_the_root_get_nothing(served, clip):
    url, _, private = served
    clip = clip.replace("PRIVATE", str(private))
    status, body, _ = get(audio_url(url, clip))
    assert status in (403, 404) and SECRET not in body


@pytest.mark.parametrize("tail", ["audio/../../private/passwd", "audio/%2e%2e/%2e%2e/private/passwd",
                                  "audio?run=listen-run&clip=%2e%2e%2fprivate%2fsecret",
                                  "audio?run=..%2f..&clip=secret", "audio?run=listen-run&clip=%2Fetc%2Fpasswd"])
def test_traversal_in_the_url_gets_nothing(served, tail):
    url, _, _ = served
    status, body, headers = get(url + tail)
    assert SECRET not in body and not headers.get("Content-Type", "").startswith("audio/")
    assert status in (400, 403, 404) or headers["Content-Type"].startswith("text/html")  # else Dash's page


def test_a_clip_without_audio_says_why(served):
    url, root, _ = served
    status, body, _ = get(audio_url(url, "folk_004"))
    assert status == 404 and body.decode().strip() == f"no audio file named folk_004.* under {root}"


@pytest.mark.parametrize("model", ["acestep", "acestep15"])
def test_up_demo_writes_its_clips_audio_and_the_dashboard_plays_it(tmp_path, model):
    """v1's clips are found by key in <store>/demo-audio, 1.5's by the audio_path their metadata reports."""
    ingest, query_endpoint, port = (f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}", free_port())
    up = ManagedProcess([sys.executable, "-m", "acestep_viz", "up", "--demo", "--model", model, "--steps", "8",
                         "--store", str(tmp_path / "store"), "--ingest", ingest, "--query", query_endpoint,
                         "--port", str(port)], log_path=tmp_path / "up.log")
    with up:
        def latent_points():
            reply = try_query(query_endpoint, {"op": "snapshot", "run": None, "since": None}) or {}
            points = ((reply.get("spaces") or {}).get("latent") or {}).get("points") or {}
            return (reply["run"], points) if len(points.get("id") or []) >= 4 else None

        run, points = wait_for(latent_points, timeout=240, interval=1)
        clip = points["id"][0]
        if model == "acestep15":
            assert points["audio"][0] == str(tmp_path / "store" / "demo-audio" / clip)
        else:
            assert "audio" not in points  # v1 batches carry no path (no row has one: no column): the key finds the file
        req = urllib.request.Request(f"http://127.0.0.1:{port}/audio?run={quote(run)}&clip={quote(clip)}")
        with urllib.request.urlopen(req, timeout=30) as reply:
            assert reply.headers["Content-Type"] == "audio/wav"
            assert reply.read() == (tmp_path / "store" / "demo-audio" / f"{clip.removesuffix('.wav')}.wav").read_bytes()
