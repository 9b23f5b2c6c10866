"""The Dash app factory and a server entry point.

Everything the page needs is served from this machine: Plotly.js and the Dash renderer from
the installed dash package (``serve_locally``), the Bootstrap theme and the palette from the
repository's ``assets/`` folder. No CDN, no external stylesheet.
"""
from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import dash
from acestep_viz.dashboard import (
    adapter_callbacks,
    callbacks,
    compare_callbacks,
    export_callbacks,
    health_callbacks,
    model_labels,
    view_callbacks,
)
from acestep_viz.dashboard.api import register_api
from acestep_viz.dashboard.audio_route import AudioLibrary, register_audio
from acestep_viz.dashboard.auth import require_token
from acestep_viz.dashboard.cache import ReplyCache
from acestep_viz.dashboard.client import CollectorClient
from acestep_viz.dashboard.embed import register_embed
from acestep_viz.dashboard.layout import page

from acestep_viz.settings import DEFAULT_QUERY
from acestep_viz.settings import url_path as normalise_prefix  # Dash needs "/viz/", users type "viz"


def assets_folder() -> Path:
    """The stylesheets and scripts the page loads: ``acestep_viz/assets`` installed, ``assets/`` in a checkout."""
    spec = importlib.util.find_spec("acestep_viz.assets")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("acestep_viz.assets is missing: reinstall acestep-viz (pip install acestep-viz[dashboard])")
    return Path(next(iter(spec.submodule_search_locations)))


DEFAULT_TITLE = "ACE-Step LoRA embeddings"


def create_app(collector: str = DEFAULT_QUERY, interval_s: float = 15, url_prefix: str = "/",
               title: str = DEFAULT_TITLE, timeout_ms: int = 1500, curve_dir: str | None = None,
               token: str | None = None, alert_settings: dict | None = None,
               audio_roots: tuple[str, ...] = ()) -> dash.Dash:
    """A Dash app polling the collector's query endpoint every ``interval_s`` seconds. ``alert_settings``:
    the ``alert_*`` dashboard settings (dashboard/options.py); defaults where missing. ``audio_roots``: the
    folders whose audio files a selected clip may be played from (dashboard/audio.py)."""
    if not interval_s or interval_s <= 0:
        raise ValueError(f"interval_s must be greater than 0, got {interval_s!r}")
    app = dash.Dash(
        __name__,
        assets_folder=str(assets_folder()),
        url_base_pathname=normalise_prefix(url_prefix),
        serve_locally=True,
        title=title,
        update_title=None,
    )
    app.layout = page(interval_s)
    client = CollectorClient(collector, timeout_ms=request_timeout_ms(interval_s, timeout_ms), curve_dir=curve_dir)
    cache = ReplyCache()
    callbacks.register(app, client, cache)
    audio = AudioLibrary(audio_roots, client, app.config.url_base_pathname)
    view_callbacks.register(app, client, cache, audio)
    compare_callbacks.register(app, client, cache)
    model_labels.register(app, cache)
    export_callbacks.register(app, client)
    health_callbacks.register(app, client)
    adapter_callbacks.register(app, client, adapter_callbacks.thresholds_from(alert_settings))
    require_token(app, token)  # optional --token: 401 without it (dashboard/auth.py)
    register_embed(app)
    register_api(app, client)  # HTTP JSON API under the same prefix and token (dashboard/api.py)
    register_audio(app, audio)  # a selected clip's audio, only from under audio_roots (dashboard/audio_route.py)
    return app


def request_timeout_ms(interval_s: float, timeout_ms: int = 1500) -> int:
    """Shorter than the poll interval: Dash drops a reply once the next tick's request is out,
    so a slower timeout would never let "Collector offline" reach the page."""
    return max(250, min(int(timeout_ms), int(interval_s * 600)))


def serve(collector: str = DEFAULT_QUERY, host: str = "127.0.0.1", port: int = 8050,
          quiet: bool = True, **kw) -> None:
    """Run the app on Flask's threaded server until interrupted. ``kw`` goes to ``create_app``."""
    app = create_app(collector, **kw)
    if quiet:  # one access-log line per poll per browser is noise
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    print(f"acestep-viz dashboard on http://{host}:{port}{normalise_prefix(kw.get('url_prefix', '/'))} "
          f"(collector {collector})", flush=True)
    app.run(host=host, port=int(port), debug=False)
