"""The dashboard's settings, each declared once; ``acestep-viz dashboard`` and ``up`` read them."""
from __future__ import annotations

from acestep_viz.security import ALLOW_REMOTE, CURVE_DIR
from acestep_viz.settings import COLLECTOR_ENDPOINT, Setting, at_least, existing_folder, positive, url_path


def port_number(value: int) -> str | None:
    return None if 0 < value < 65536 else "must be a port between 1 and 65535"


HOST = Setting("host", "127.0.0.1", "address the dashboard listens on")
PORT = Setting("port", 8050, "dashboard HTTP port", parse=int, check=port_number)
INTERVAL = Setting("interval", 15.0, "default dashboard refresh interval, seconds", parse=float,
                   check=positive)
URL_PREFIX = Setting("url_prefix", "/", "serve the dashboard under this path, e.g. /viz/ behind a reverse proxy",
                     parse=url_path)
TOKEN = Setting("token", None, "dashboard access token: every request needs ?token=TOKEN once (then a cookie) or "
                "'Authorization: Bearer TOKEN', else 401; set it whenever --host is not loopback")
AUDIO_ROOT = Setting("audio_root", (), "folder of the training clips' audio files: a selected clip can be played "
                     "from under it (its reported path, else a file named after its key); repeat the flag for several, "
                     "or separate them in the variable with ':' (';' on Windows). Only audio files under these "
                     "folders are served", check=existing_folder, several=True)


def share(value: float) -> str | None:
    return None if 0 < value <= 1 else "must be a share between 0 (excluded) and 1"


# Alert thresholds (dashboard/alerts.py); the names match alerts.Thresholds' fields after "alert_".
ALERT_SETTINGS = (
    Setting("alert_warmup_steps", 100, "no alert before this training step: the adapter starts at zero and "
            "the maps need a few steps to settle", parse=int, check=at_least(0)),
    Setting("alert_window_steps", 200, "the alerts' look-back: growth of the update size and of the LoRA drift "
            "is measured over the last this many steps", parse=int, check=positive),
    Setting("alert_adapter_min", 1e-4, "'the adapter does not move' when every LoRA layer's update size "
            "||scale*BA||/||W|| is under this after the warm-up (a zero learning rate stays at 0)",
            parse=float, check=positive),
    Setting("alert_adapter_growth", 0.01, "'the adapter stopped growing' when every layer's update size grew "
            "by less than this share of itself over the window", parse=float, check=share),
    Setting("alert_rank_share", 0.5, "'the space is collapsing' when a space's effective rank falls under this "
            "share of its first value", parse=float, check=share),
    Setting("alert_drift_min", 0.01, "'the LoRA map stopped changing' when the LoRA drift grew by less than "
            "this over the window", parse=float, check=positive),
)

DASHBOARD_SETTINGS = (COLLECTOR_ENDPOINT, HOST, PORT, INTERVAL, ALLOW_REMOTE, CURVE_DIR, TOKEN, URL_PREFIX,
                      AUDIO_ROOT, *ALERT_SETTINGS)
