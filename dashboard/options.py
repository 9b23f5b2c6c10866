"""The dashboard's settings, each declared once; ``acestep-viz dashboard`` and ``up`` read them."""
from __future__ import annotations

from acestep_viz.security import ALLOW_REMOTE, CURVE_DIR
from acestep_viz.settings import COLLECTOR_ENDPOINT, Setting, existing_folder, positive, url_path


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

DASHBOARD_SETTINGS = (COLLECTOR_ENDPOINT, HOST, PORT, INTERVAL, ALLOW_REMOTE, CURVE_DIR, TOKEN, URL_PREFIX, AUDIO_ROOT)
