"""Listening to a selected clip in a real headless Chromium: the details card plays it, or says why not."""
from __future__ import annotations

import numpy as np
import pytest
from acestep_viz.dashboard import ids
from acestep_viz.trainer_plugin.demo.audio_files import write_wav

from tests.browser_support import GRAPH_JS, SHORT_MS, WAIT_MS, chromium, emit_selection, wait_counts, watched_page
from tests.support import (
    CollectorProcess,
    DashboardProcess,
    projected_snapshot,
    send_frames,
    synthetic_frames,
    wait_for,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]

RUN = "listen-browser"
SECONDS = 2.0
RATE = 4000  # the v1 demo's rate: the lowest the demo writes
AUDIO_JS = f"document.querySelector('#{ids.DETAILS} audio')"


def indices_of(page, clips: list[str]) -> list[int]:
    """Point indices of these clips in the latent trace."""
    return page.evaluate(f"(clips) => clips.map(c => {GRAPH_JS}.data[0].customdata.indexOf(c))", clips)


def test_a_selected_clip_plays_in_its_card_and_one_without_audio_says_why(tmp_path):
    root = tmp_path / "songs"
    (root / "metal").mkdir(parents=True)
    secret = tmp_path / "secret.wav"
    t = np.arange(int(SECONDS * RATE)) / RATE
    write_wav(str(root / "metal" / "metal_000.wav"), np.stack([np.sin(2 * np.pi * 220 * t)] * 2) * 0.5, RATE)
    write_wav(str(secret), np.zeros((2, RATE)), RATE)
    with CollectorProcess(tmp_path / "store", extra_args=["--projection-interval-s", "0.2"]) as collector:
        send_frames(collector.ingest, synthetic_frames(run=RUN, n_clips=10, steps=1))
        wait_for(lambda: projected_snapshot(collector.query, RUN, minimum=10), timeout=WAIT_MS / 1000)
        with DashboardProcess(collector.query, log_dir=tmp_path, extra_args=["--audio-root", str(root)]) as dashboard:
            with chromium() as browser, watched_page(browser, dashboard.url) as watched:
                page = watched.page
                wait_counts(page, [10, 30, 10])
                emit_selection(page, 0, indices_of(page, ["metal_000", "folk_004"]))
                page.wait_for_function(f"{AUDIO_JS} !== null", timeout=SHORT_MS)
                details = page.inner_text(f"#{ids.DETAILS}")
                assert f"no audio file named folk_004.* under {root}" in details
                assert page.evaluate(f"document.querySelectorAll('#{ids.DETAILS} audio').length") == 1
                assert page.evaluate(f"{AUDIO_JS}.preload") == "none"  # nothing loads until asked
                page.evaluate(f"(() => {{ const a = {AUDIO_JS}; a.muted = true; a.load(); }})()")
                page.wait_for_function(f"{AUDIO_JS}.readyState >= 1 && {AUDIO_JS}.duration > 0", timeout=SHORT_MS)
                assert page.evaluate(f"{AUDIO_JS}.duration") == pytest.approx(SECONDS, abs=0.05)
                page.evaluate(f"{AUDIO_JS}.play()")
                page.wait_for_function(f"{AUDIO_JS}.currentTime > 0", timeout=SHORT_MS)
                refused = page.evaluate("""async (path) => {
                    const asks = ['audio?run=listen-browser&clip=..%2Fsecret.wav',
                                  'audio?run=listen-browser&clip=' + encodeURIComponent(path),
                                  'audio?run=listen-browser&clip=%2e%2e%2fsecret'];
                    return Promise.all(asks.map(async (u) => {
                        const r = await fetch(u);
                        return [r.status, r.headers.get('content-type')];
                    }));
                }""", str(secret))
                assert all(status == 404 and not kind.startswith("audio/") for status, kind in refused), refused
