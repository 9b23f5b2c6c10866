"""What the user waits for in the browser: 3 x N points from the poll to the drawn maps, and a redraw.

A fake collector (tests/fake_collector.py) serves 3 x N points; a real dashboard process polls it;
real Chromium (headless, /usr/bin/chromium through Playwright, as the browser tests) shows the page.
The dashboard's own poll interval is an hour, so the only polls are the ones timed here:

- draw: the collector's version goes up, the page's Refresh button is clicked (the same callbacks as
  a poll that finds a new snapshot), and the clock stops at Plotly's ``plotly_afterplot`` for the
  figure of that version: server callbacks, transfer, JSON parsing and WebGL drawing together.
- redraw: the LoRA panel's colour choice changes (loss <-> step), and the clock stops at the
  ``plotly_afterplot`` whose colour bar names the new choice.

Clocks are the page's ``performance.now()``; several rounds, median and p95 are recorded.

    python tests/benchmarks/browser_bench.py [--points 10000 50000] [--rounds 8]
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
from pathlib import Path

from acestep_viz.dashboard import ids
from common import record
from support import DashboardProcess

from tests.browser_support import CHROMIUM, CHROMIUM_ARGS, COUNTS_JS, GRAPH_JS, VIEWPORT
from tests.fake_collector import FakeCollector

HOUR_S = 3600
LOAD_MS = 300_000

WATCH_JS = f"""() => {{
    window.__drawn = [];
    const gd = {GRAPH_JS};
    gd.on('plotly_afterplot', () => {{
        const full = gd._fullData[1] || {{}}, bar = full.marker && full.marker.colorbar;
        window.__drawn.push({{t: performance.now(), version: (gd.layout.meta || {{}}).version,
                             title: bar && bar.title ? bar.title.text : null}});
    }});
}}"""
CLICK_JS = f"""() => {{
    window.__started = performance.now();
    document.getElementById('{ids.REFRESH_BUTTON}').click();
}}"""
COLOUR_JS = f"""(choice) => {{
    window.__started = performance.now();
    window.dash_clientside.set_props('{ids.COLOUR_SELECTS["lora"]}', {{value: choice}});
}}"""
DRAWN_JS = """([key, value]) => window.__drawn.some(d => d.t >= window.__started && d[key] === value)"""
ELAPSED_JS = """([key, value]) => {
    const hit = window.__drawn.find(d => d.t >= window.__started && d[key] === value);
    return (hit.t - window.__started) / 1000;
}"""
TITLES = {"loss": "Loss", "step": "Step"}


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) > 1 else values[0]


def timed(page, start_js: str, arg, key: str, value) -> float:
    page.evaluate(start_js, arg) if arg is not None else page.evaluate(start_js)
    page.wait_for_function(DRAWN_JS, arg=[key, value], timeout=LOAD_MS)
    return page.evaluate(ELAPSED_JS, [key, value])


def measure(browser, n: int, rounds: int, log_dir: Path) -> dict:
    draws, redraws = [], []
    with FakeCollector(n) as fake, DashboardProcess(fake.endpoint, interval_s=HOUR_S, log_dir=log_dir) as dashboard:
        context = browser.new_context(viewport=VIEWPORT)
        try:
            page = context.new_page()
            page.goto(dashboard.url, wait_until="domcontentloaded")
            page.wait_for_function(COUNTS_JS, arg=[n, n, n], timeout=LOAD_MS)
            page.evaluate(WATCH_JS)
            for i in range(rounds):
                version = fake.bump()
                draws.append(timed(page, CLICK_JS, None, "version", version))
                choice = "loss" if i % 2 == 0 else "step"
                redraws.append(timed(page, COLOUR_JS, choice, "title", TITLES[choice]))
        finally:
            context.close()
    suffix = f"{n // 1000}k"
    return {f"browser_draw_s_{suffix}": round(statistics.median(draws), 3),
            f"browser_draw_p95_s_{suffix}": round(p95(draws), 3),
            f"browser_redraw_s_{suffix}": round(statistics.median(redraws), 3),
            f"browser_redraw_p95_s_{suffix}": round(p95(redraws), 3)}


def main(sizes=(10000, 50000), rounds: int = 8) -> dict:
    from playwright.sync_api import sync_playwright

    if not shutil.which(CHROMIUM):
        raise SystemExit(f"{CHROMIUM} is not installed: the browser benchmark needs it")
    results = {}
    log_dir = Path(tempfile.mkdtemp(prefix="avz-browser-bench-"))
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                for n in sizes:
                    results.update(measure(browser, n, rounds if n <= 10000 else max(3, rounds // 2), log_dir))
                    print(json.dumps(results, indent=2), flush=True)
            finally:
                browser.close()
    finally:
        shutil.rmtree(log_dir, ignore_errors=True)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, nargs="*", default=[10000, 50000])
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    record(main(tuple(args.points), args.rounds))
