"""`acestep-viz up`: collector + dashboard (+ demo) as child processes, stopped together."""
from __future__ import annotations

import ipaddress
import os
import subprocess
import sys
import threading
import time
import urllib.request

from acestep_viz.dashboard.client import CollectorClient, CollectorError
from acestep_viz.processes import ask_to_stop, child_popen_options
from acestep_viz.settings import url_path

READY_TIMEOUT_S = 90


class StackError(OSError):
    pass


class Stack:
    def __init__(self, collector_cfg: dict, ui_cfg: dict, demo: bool):
        self.collector_cfg, self.ui_cfg, self.demo = collector_cfg, ui_cfg, demo
        self.children: dict[str, subprocess.Popen] = {}
        host = ui_cfg["host"]
        shown = "127.0.0.1" if _listens_everywhere(host) else host  # a browser cannot open the wildcard
        self.url = f"http://{shown}:{ui_cfg['port']}{url_path(ui_cfg.get('url_prefix') or '/')}"
        self.demo_audio = os.path.join(collector_cfg["store"], "demo-audio") if demo else None

    def _spawn(self, name: str, *args: str) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "acestep_viz", *args]
        env = dict(os.environ)
        if self.collector_cfg.get("curve_dir"):  # the demo's publisher reads its keys from here
            env["ACESTEP_VIZ_CURVE_DIR"] = self.collector_cfg["curve_dir"]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, env=env, **child_popen_options())
        self.children[name] = proc
        return proc

    def start(self) -> None:
        c = self.collector_cfg
        remote = ["--allow-remote"] if c["allow_remote"] else []
        curve = ["--curve-dir", c["curve_dir"]] if c.get("curve_dir") else []
        self._spawn("collector", "collector", "--ingest", c["ingest"], "--query", c["query"], "--store", c["store"],
                    "--buffer-size", str(c["buffer_size"]), "--n-neighbors", str(c["n_neighbors"]),
                    "--prompt-variants-per-clip", str(c["prompt_variants_per_clip"]),
                    "--projection-interval-s", str(c["projection_interval_s"]),
                    "--max-fit-points", str(c["max_fit_points"]), "--history-size", str(c["history_size"]),
                    "--refit-new-share", str(c["refit_new_share"]), "--refit-interval-s", str(c["refit_interval_s"]),
                    "--retention-days", str(c["retention_days"]), "--retention-max-mb", str(c["retention_max_mb"]),
                    "--numba-cache-dir", c["numba_cache_dir"], *remote, *curve)
        self._wait("collector", self._collector_answers)
        u = self.ui_cfg
        roots = [*u.get("audio_root", ()), *([self.demo_audio] if self.demo else [])]
        if self.demo:
            os.makedirs(self.demo_audio, exist_ok=True)  # the demo writes its clips' audio here
        self._spawn("dashboard", "dashboard", "--collector", c["query"], "--host", u["host"], "--port",
                    str(u["port"]), "--interval", str(u["interval"]), "--url-prefix", u.get("url_prefix") or "/",
                    *remote, *curve, *[arg for root in roots for arg in ("--audio-root", root)])
        self._wait("dashboard", self._dashboard_answers)
        if self.demo:
            self._spawn("demo", "demo", "--endpoint", c["ingest"], "--steps", str(u["steps"]),
                        "--model", u.get("model") or "acestep", "--audio-dir", self.demo_audio,
                        *(["--compare"] if u.get("compare") else []))

    def _wait(self, name: str, ready) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.children[name].poll() is not None:
                raise StackError(f"the {name} exited with code {self.children[name].returncode} (see its error above)")
            if ready():
                return
            time.sleep(0.3)
        raise StackError(f"the {name} did not become ready within {READY_TIMEOUT_S} s")

    def _collector_answers(self) -> bool:
        client = CollectorClient(self.collector_cfg["query"], timeout_ms=500,
                                 curve_dir=self.collector_cfg.get("curve_dir"))
        try:
            return bool(client.request({"op": "ping"}).get("ok"))
        except CollectorError:
            return False

    def _dashboard_answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.url, timeout=1) as resp:
                return resp.status == 200
        except OSError:
            return False

    def supervise(self, stopping: threading.Event) -> int:
        """Wait for Ctrl-C/SIGTERM (Ctrl-Break on Windows); a dead collector or dashboard stops everything."""
        demo_reported = False
        while not stopping.wait(0.5):
            for name in ("collector", "dashboard"):
                if self.children[name].poll() is not None:
                    print(f"the {name} stopped (code {self.children[name].returncode}); stopping the rest",
                          file=sys.stderr, flush=True)
                    return 1
            demo = self.children.get("demo")
            if demo is not None and demo.poll() is not None and not demo_reported:
                demo_reported = True
                print(f"demo run finished (code {demo.returncode}); the dashboard stays at {self.url} "
                      f"- press Ctrl-C to stop", flush=True)
        return 0

    def close(self) -> None:
        children, self.children = self.children, {}
        for proc in reversed(list(children.values())):
            ask_to_stop(proc)
        for proc in children.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _listens_everywhere(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False
