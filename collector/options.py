"""The sidecar's settings (collector, dashboard, demo), each declared once.

The trainer side declares its own in ``trainer_plugin/settings.py``; the README lists both.
"""
from __future__ import annotations

import ipaddress
import os
from urllib.parse import urlparse

from collector.settings import Setting, at_least, parse_bool, positive, url_path, zmq_endpoint
from collector.store import default_store_dir


def default_numba_cache() -> str:
    if os.environ.get("NUMBA_CACHE_DIR"):
        return os.environ["NUMBA_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "acestep-viz", "numba")


def port_number(value: int) -> str | None:
    return None if 0 < value < 65536 else "must be a port between 1 and 65535"


INGEST = Setting("ingest", "tcp://127.0.0.1:5557", "ZeroMQ endpoint the collector binds to receive frames",
                 check=zmq_endpoint)
QUERY = Setting("query", "tcp://127.0.0.1:5558", "ZeroMQ endpoint the collector binds to answer queries",
                check=zmq_endpoint)
STORE = Setting("store", default_store_dir(), "directory of the durable run logs (one folder per run)")
BUFFER_SIZE = Setting("buffer_size", 2000, "rows kept per run and space; the oldest go first",
                      parse=int, check=at_least(10))
N_NEIGHBORS = Setting("n_neighbors", 10, "PaCMAP n_neighbors", parse=int, check=at_least(2))
PROJECTION_INTERVAL = Setting("projection_interval_s", 1.0,
                              "least time between two fits of the same space, seconds",
                              parse=float, check=at_least(0.0))
MAX_FIT_POINTS = Setting("max_fit_points", 3000,
                         "most rows one PaCMAP fit uses; above it a sample keeps every clip's newest row",
                         parse=int, check=at_least(10))
HISTORY_SIZE = Setting("history_size", 100, "projection frames kept per run and space for scrubbing and replay",
                       parse=int, check=at_least(1))
RETENTION_DAYS = Setting("retention_days", 30,
                         "delete a run's folder when its log was last written longer ago than this, in days "
                         "(checked at start-up and hourly; never the run receiving frames); 0 keeps runs forever",
                         parse=float, check=at_least(0))
RETENTION_MAX_MB = Setting("retention_max_mb", 1024,
                           "a run's log past this many MB is compacted to just the rows its buffers hold "
                           "(a restart still restores them); 0: no limit", parse=float, check=at_least(0))
REFIT_NEW_SHARE = Setting("refit_new_share", 0.2,
                          "between full PaCMAP fits, new rows are placed next to their nearest fitted rows and "
                          "old points stay put; a full fit follows once this share of the map is new (or gone)",
                          parse=float, check=lambda v: None if 0 <= v <= 1 else "must be between 0 and 1")
REFIT_INTERVAL_S = Setting("refit_interval_s", 60.0,
                           "a full PaCMAP fit of a space that keeps changing at least this often, seconds "
                           "(0: only by --refit-new-share)", parse=float, check=at_least(0.0))
NUMBA_CACHE = Setting("numba_cache_dir", default_numba_cache(),
                      "writable directory for PaCMAP's compiled kernels (start-up drops from ~25 s to a few)")
ALLOW_REMOTE = Setting("allow_remote", False,
                       "allow binding to addresses other than loopback (exposes the ports; off by default)",
                       parse=parse_bool)
COLLECTOR_ENDPOINT = Setting("collector", "tcp://127.0.0.1:5558", "the collector's query endpoint",
                             check=zmq_endpoint)
HOST = Setting("host", "127.0.0.1", "address the dashboard listens on")
PORT = Setting("port", 8050, "dashboard HTTP port", parse=int, check=port_number)
INTERVAL = Setting("interval", 15.0, "default dashboard refresh interval, seconds", parse=float,
                   check=positive)
URL_PREFIX = Setting("url_prefix", "/", "serve the dashboard under this path, e.g. /viz/ behind a reverse proxy",
                     parse=url_path)
STEPS = Setting("steps", 1000, "training steps of the demo run", parse=int, check=positive)

COLLECTOR_SETTINGS = (INGEST, QUERY, STORE, BUFFER_SIZE, N_NEIGHBORS, PROJECTION_INTERVAL, MAX_FIT_POINTS,
                      HISTORY_SIZE, REFIT_NEW_SHARE, REFIT_INTERVAL_S, RETENTION_DAYS, RETENTION_MAX_MB,
                      NUMBA_CACHE, ALLOW_REMOTE)
DASHBOARD_SETTINGS = (COLLECTOR_ENDPOINT, HOST, PORT, INTERVAL, ALLOW_REMOTE)
DEMO_SETTINGS = (STEPS,)  # plus the trainer's endpoint and run, see trainer_plugin/settings.py

# Exposure (collector/security.py, dashboard/auth.py): optional CurveZMQ keys and dashboard token.
CURVE_DIR = Setting("curve_dir", None,
                    "folder of CurveZMQ keys from `acestep-viz keys DIR`: the collector encrypts ingest and query "
                    "and admits only keys in DIR/authorized_clients; clients (dashboard, stats) use its client keys")
TOKEN = Setting("token", None, "dashboard access token: every request needs ?token=TOKEN once (then a cookie) or "
                "'Authorization: Bearer TOKEN', else 401; set it whenever --host is not loopback")
COLLECTOR_SETTINGS += (CURVE_DIR,)
DASHBOARD_SETTINGS += (CURVE_DIR, TOKEN, URL_PREFIX)


def is_loopback_host(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind_problem(endpoint_or_host: str, allow_remote: bool) -> str | None:
    """A message when a bind address is not loopback and --allow-remote was not given."""
    if allow_remote:
        return None
    if endpoint_or_host.startswith(("ipc://", "inproc://")):
        return None
    host = urlparse(endpoint_or_host).hostname if "://" in endpoint_or_host else endpoint_or_host
    if host and is_loopback_host(host):
        return None
    return (f"{endpoint_or_host} is not a loopback address; binding it exposes the port to the network. "
            f"Pass --allow-remote (or set ACESTEP_VIZ_ALLOW_REMOTE=1) if that is what you want")
