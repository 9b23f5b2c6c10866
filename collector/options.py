"""The collector's settings, each declared once; ``acestep-viz collector`` and ``up`` read them."""
from __future__ import annotations

import os

from acestep_viz.security import ALLOW_REMOTE, CURVE_DIR
from acestep_viz.settings import DEFAULT_QUERY, STORE, Setting, at_least, zmq_endpoint
from acestep_viz.wire import DEFAULT_INGEST


def default_numba_cache() -> str:
    if os.environ.get("NUMBA_CACHE_DIR"):
        return os.environ["NUMBA_CACHE_DIR"]
    if os.name == "nt" and os.environ.get("LOCALAPPDATA"):
        return os.path.join(os.environ["LOCALAPPDATA"], "acestep-viz", "numba")
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "acestep-viz", "numba")


NUMBA_CACHE_DOC = ("`$NUMBA_CACHE_DIR` when set, else `~/.cache/acestep-viz/numba` "
                   "(`$XDG_CACHE_HOME/acestep-viz/numba` when set; Windows: `%LOCALAPPDATA%\\acestep-viz\\numba`)")


INGEST = Setting("ingest", DEFAULT_INGEST, "ZeroMQ endpoint the collector binds to receive frames",
                 check=zmq_endpoint)
QUERY = Setting("query", DEFAULT_QUERY, "ZeroMQ endpoint the collector binds to answer queries",
                check=zmq_endpoint)
BUFFER_SIZE = Setting("buffer_size", 2000, "rows kept per run and space; the oldest go first",
                      parse=int, check=at_least(10))
PROMPT_VARIANTS = Setting("prompt_variants_per_clip", 8,
                          "prompt texts kept per clip in the prompt space (ACE-Step shuffles a clip's tags and picks "
                          "a recaption on every visit, so one clip has many); the oldest goes first",
                          parse=int, check=at_least(1))
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
                      "writable directory for PaCMAP's compiled kernels (start-up drops from ~25 s to a few)",
                      doc_default=NUMBA_CACHE_DOC)

COLLECTOR_SETTINGS = (INGEST, QUERY, STORE, BUFFER_SIZE, PROMPT_VARIANTS, N_NEIGHBORS, PROJECTION_INTERVAL,
                      MAX_FIT_POINTS, HISTORY_SIZE, REFIT_NEW_SHARE, REFIT_INTERVAL_S, RETENTION_DAYS, RETENTION_MAX_MB,
                      NUMBA_CACHE, ALLOW_REMOTE, CURVE_DIR)
