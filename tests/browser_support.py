"""Shared pieces of the browser tests: the Chromium fixture, a real collector + dashboard stack,
a feeder that builds a run step by step, and small readers of what the page shows.

Chromium is Debian's /usr/bin/chromium, driven by Playwright through ``executable_path``
(never ``playwright install``). Everything binds 127.0.0.1 on free ports and stops by pid.
"""
from __future__ import annotations

import json
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from acestep_viz.dashboard import ids

from acestep_viz.wire import Frame
from tests.support import CollectorProcess, DashboardProcess, send_frames, try_query, wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1400, "height": 900}
EVIL = " <script>window.__pwned = 1</script> & <b>bold</b>"
WAIT_MS = 120_000  # the first PaCMAP fit of a fresh collector may compile numba kernels
SHORT_MS = 20_000
SPACES = ("latent", "lora", "prompt")
POLL_INTERVAL_S = 1  # the dashboards under test poll every second

GRAPH_JS = f"document.querySelector('#{ids.GRAPH} .js-plotly-plot')"
# Coordinates and colours arrive as base64 typed arrays: gd.data holds the specs, gd._fullData
# (the same traces, in the same order) the decoded numbers. Numbers are read from there.
POINTS_JS = f"""(min) => {{
    const gd = {GRAPH_JS};
    if (!gd || !gd._fullData || gd._fullData.length < 3) return false;
    return gd._fullData.slice(0, 3).every(t => t.x && t.x.length >= min);
}}"""
COUNTS_JS = f"""(counts) => {{
    const gd = {GRAPH_JS};
    if (!gd || !gd._fullData || gd._fullData.length < 3) return false;
    return counts.every((n, i) => gd._fullData[i].x && gd._fullData[i].x.length === n);
}}"""


# -- the browser ---------------------------------------------------------------------------------
@contextmanager
def chromium():
    """Debian's Chromium, headless, through Playwright; a skip where either is missing."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not shutil.which(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is not installed")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Watched:
    """A page and what went wrong on it: uncaught script errors and failed callback requests."""

    page: object
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)


@contextmanager
def watched_page(browser, url: str | None = None) -> Iterator[Watched]:
    """A fresh page (own context) that fails the test on script errors or HTTP 5xx answers."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    watched = Watched(page)
    page.on("pageerror", lambda exc: watched.errors.append(f"page error: {exc}"))
    page.on("response", lambda r: watched.errors.append(f"HTTP {r.status} from {r.url}")
            if r.status >= 500 else None)
    try:
        if url:
            page.goto(url, wait_until="domcontentloaded")
        yield watched
        assert watched.errors == [], watched.errors
    finally:
        context.close()


# -- a collector + dashboard stack, and runs fed step by step ------------------------------------
@dataclass
class Stack:
    collector: CollectorProcess
    dashboard: DashboardProcess

    @property
    def url(self) -> str:
        return self.dashboard.url


@contextmanager
def running_stack(tmp: Path, interval_s: float = POLL_INTERVAL_S) -> Iterator[Stack]:
    """A collector that refits often (0.2 s) and a dashboard polling it every ``interval_s``."""
    with CollectorProcess(tmp / "store", extra_args=["--projection-interval-s", "0.2"]) as collector:
        with DashboardProcess(collector.query, interval_s=interval_s, log_dir=tmp) as dashboard:
            yield Stack(collector, dashboard)


GENRES = ("metal", "jazz", "ambient", "techno", "folk")
GENRE_PROMPTS = {"metal": "metal, heavy guitars, 140 bpm", "jazz": "jazz, upright bass, brushed drums",
                 "ambient": "ambient, warm pads, slow", "techno": "techno, four on the floor, 128 bpm",
                 "folk": "folk, acoustic guitar, vocals"}


class RunFeeder:
    """A synthetic training run sent to a collector one step at a time.

    Each step brings ``new_clips`` clips into the latent and prompt spaces and one LoRA row per
    (clip seen so far, layer); after each step the feeder waits until the collector has projected
    every row, so the collector's history gets one map per step and space.
    """

    def __init__(self, collector: CollectorProcess, run: str, layers: int = 3, dim: int = 32, seed: int = 0,
                 prompt_suffix: str = "", short_prompts: bool = False):
        self.collector, self.run, self.layers, self.dim = collector, run, layers, dim
        self.rng = np.random.default_rng(seed)
        self.centres = {space: self.rng.normal(0, 0.6, size=(len(GENRES), dim)) for space in SPACES}
        self.layer_offsets = self.rng.normal(0, 0.8, size=(layers, dim))
        self.drift = self.rng.normal(0, 0.15, size=dim)
        self.prompt_suffix, self.short_prompts = prompt_suffix, short_prompts
        self.clips: list[str] = []
        self.prompts: dict[str, str] = {}
        self.counts = {space: 0 for space in SPACES}
        self.steps: list[int] = []

    def genre(self, clip: str) -> int:
        return GENRES.index(clip.split("_")[0])

    def _vectors(self, space: str, clips: list[str], shift=0.0) -> np.ndarray:
        genres = [self.genre(c) for c in clips]
        noise = self.rng.normal(0, 1.0, size=(len(clips), self.dim))
        return (self.centres[space][genres] + shift + noise).astype(np.float16)

    def step(self, step: int, new_clips: int, timeout: float = WAIT_MS / 1000) -> "RunFeeder":
        start = len(self.clips)
        new = [f"{GENRES[i % len(GENRES)]}_{i:03d}" for i in range(start, start + new_clips)]
        for clip in new:
            base = GENRES[self.genre(clip)] if self.short_prompts else GENRE_PROMPTS[GENRES[self.genre(clip)]]
            self.prompts[clip] = base + self.prompt_suffix
        self.clips += new
        frames = []
        if new:
            for space in ("latent", "prompt"):
                frames.append(Frame(run=self.run, space=space, step=step, vectors=self._vectors(space, new), ids=new,
                                    meta=[{"prompt": self.prompts[c]} for c in new], sent_at=time.time()))
        for layer in range(self.layers):
            shift = self.layer_offsets[layer] + self.drift * step
            meta = [{"prompt": self.prompts[c], "loss": round(0.8 / (step + 1) + 0.01 * layer, 4),
                     "timestep": 100.0 * (1 + (i + step) % 9), "layer": f"blocks.{layer}.attn.to_out.0"}
                    for i, c in enumerate(self.clips)]
            frames.append(Frame(run=self.run, space="lora", step=step, micro_batch=0,
                                vectors=self._vectors("lora", self.clips, shift), ids=list(self.clips), meta=meta,
                                sent_at=time.time()))
        send_frames(self.collector.ingest, frames)
        self.counts = {"latent": len(self.clips), "prompt": len(self.clips),
                       "lora": self.counts["lora"] + len(self.clips) * self.layers}
        self.steps.append(step)
        self.wait_projected(timeout)
        return self

    def feed(self, steps: int, new_clips: int) -> "RunFeeder":
        first = self.steps[-1] + 1 if self.steps else 0
        for step in range(first, first + steps):
            self.step(step, new_clips)
        return self

    def wait_projected(self, timeout: float = WAIT_MS / 1000) -> dict:
        """Until the collector holds and has projected every row sent so far in all three spaces."""
        def done():
            if not self.collector.alive():
                raise RuntimeError(f"the collector exited:\n{self.collector.log_text()}")
            stats = try_query(self.collector.query, {"op": "stats"})
            spaces = ((stats or {}).get("runs") or {}).get(self.run) or {}
            return all(spaces.get(s, {}).get("buffered") == n and spaces[s].get("projected") == n
                       for s, n in self.counts.items()) and stats
        return wait_for(done, timeout, 0.2)

    def stat_texts(self) -> dict[str, str]:
        return {space: f"{n:,} samples (projected)" for space, n in self.counts.items()}

    def trace_counts(self) -> list[int]:
        return [self.counts[space] for space in SPACES]


# -- reading the page ----------------------------------------------------------------------------
def wait_badge(page, label: str, timeout: int = WAIT_MS, badge: str = ids.STATUS_BADGE):
    page.wait_for_function(f"(label) => document.getElementById('{badge}').innerText === label",
                           arg=label, timeout=timeout)


def wait_counts(page, counts: list[int], timeout: int = WAIT_MS):
    """Until the three point traces hold exactly these numbers of points."""
    page.wait_for_function(COUNTS_JS, arg=counts, timeout=timeout)


def wait_text(page, selector: str, text: str, timeout: int = SHORT_MS):
    page.wait_for_function("([s, t]) => { const e = document.querySelector(s); return e && e.innerText === t; }",
                           arg=[selector, text], timeout=timeout)


@contextmanager
def dashboard_page(browser, stack: Stack, feeder: RunFeeder, query: str = "") -> Iterator[Watched]:
    """A watched page on the dashboard, once it shows every point the feeder sent, "Live"."""
    with watched_page(browser, stack.url + query) as watched:
        wait_counts(watched.page, feeder.trace_counts())
        wait_badge(watched.page, "Live")
        yield watched


def traces(page) -> list[dict]:
    """What the browser draws, per trace: point count, axes, type, colour bar, selection, ids."""
    return page.evaluate(f"""(() => {{ const gd = {GRAPH_JS}; return gd.data.map((t, k) => {{
        const f = gd._fullData[k];
        return {{
        n: f.x ? f.x.length : 0, xaxis: t.xaxis || 'x', yaxis: t.yaxis || 'y', type: t.type, mode: t.mode,
        meta: t.meta === undefined ? null : t.meta, text: t.text || [], customdata: t.customdata || [],
        x: Array.from(f.x || []), y: Array.from(f.y || []),
        selectedpoints: t.selectedpoints === undefined ? null : t.selectedpoints,
        colour_title: t.marker && t.marker.colorbar ? t.marker.colorbar.title.text : null,
        colours: f.marker && f.marker.color && typeof f.marker.color !== 'string' ? Array.from(f.marker.color)
                                                                                : null,
    }}; }}); }})()""")


def figure_meta(page) -> dict:
    return page.evaluate(f"{GRAPH_JS}.layout.meta || {{}}")


def stat_texts(page) -> dict[str, str]:
    return {space: page.inner_text(f"#{ids.STAT_IDS[space]}") for space in SPACES}


def shown(page, selector: str) -> bool:
    """Rendered (no display:none on it or any ancestor) and with a box."""
    return page.locator(selector).first.is_visible()


class PollCounter:
    """Counts the poll callback's requests, i.e. those a tick of the dcc.Interval triggered."""

    def __init__(self, page):
        self.count = 0
        page.on("request", self._seen)

    def _seen(self, request) -> None:
        if "_dash-update-component" not in request.url or request.method != "POST":
            return
        try:
            body = json.loads(request.post_data or "{}")
        except ValueError:
            return
        if f"{ids.INTERVAL}.n_intervals" in (body.get("changedPropIds") or []):
            self.count += 1

    def over(self, page, window_ms: int) -> int:
        """Poll requests sent during the next ``window_ms`` (page time keeps running meanwhile)."""
        before = self.count
        page.wait_for_timeout(window_ms)
        return self.count - before


def emit_selection(page, curve: int, indices: list[int]) -> list[str]:
    """What Plotly emits for a box or lasso selection of these points; returns their clip keys."""
    return page.evaluate(f"""([curve, indices]) => {{
        const gd = {GRAPH_JS};
        const points = indices.map(i => ({{curveNumber: curve, pointNumber: i, pointIndex: i,
                                           x: gd._fullData[curve].x[i], y: gd._fullData[curve].y[i],
                                           customdata: gd.data[curve].customdata[i]}}));
        gd.emit('plotly_selected', {{points: points}});
        return points.map(p => p.customdata);
    }}""", [curve, indices])


def isolated_point(page, curve: int) -> dict:
    """The viewport position of the point of ``curve`` farthest from every other point on its panel,
    whatever trace that point is in (the hover picks the closest of them all): easy to hit."""
    return page.evaluate(f"""(curve) => {{
        const gd = {GRAPH_JS};
        const fl = gd._fullLayout, box = gd.getBoundingClientRect(), t = gd._fullData[curve];
        const axes = (u) => [u.xaxis || 'x', u.yaxis || 'y'].join();
        const xa = fl[(t.xaxis || 'x').replace('x', 'xaxis')], ya = fl[(t.yaxis || 'y').replace('y', 'yaxis')];
        const at = (u) => Array.from(u.x || [], (x, i) => [box.left + xa._offset + xa.l2p(x),
                                                           box.top + ya._offset + ya.l2p(u.y[i])]);
        const px = at(t);
        const others = gd._fullData.filter((u, k) => k !== curve && axes(u) === axes(t)).flatMap(at);
        let best = -1, bestGap = -1;
        px.forEach((p, i) => {{
            let gap = Infinity;
            px.forEach((q, j) => {{ if (i !== j) gap = Math.min(gap, Math.hypot(p[0] - q[0], p[1] - q[1])); }});
            others.forEach((q) => {{ gap = Math.min(gap, Math.hypot(p[0] - q[0], p[1] - q[1])); }});
            if (gap > bestGap) {{ bestGap = gap; best = i; }}
        }});
        return {{index: best, x: px[best][0], y: px[best][1], key: t.customdata[best], gap: bestGap}};
    }}""", curve)


def hover_point(page, curve: int) -> dict:
    """Move the real mouse onto an isolated point of ``curve``; returns it (see isolated_point)."""
    page.locator(f"#{ids.GRAPH}").scroll_into_view_if_needed()
    point = isolated_point(page, curve)
    page.mouse.move(point["x"] - 30, point["y"] - 30)
    page.mouse.move(point["x"], point["y"], steps=4)
    return point


def hover_labels(page) -> list[dict]:
    return page.evaluate(f"""Array.from(document.querySelectorAll('#{ids.GRAPH} .hoverlayer .hovertext'))
        .map(e => ({{text: e.textContent,
                    bold: Array.from(e.querySelectorAll('tspan')).filter(s => (s.getAttribute('style') || '')
                        .includes('bold')).map(s => s.textContent),
                    elements: e.querySelectorAll('script, b, foreignObject').length}}))""")
