"""The adapter chart and the status area's alerts: fetched on each poll, redrawn only when they change.

The shown run's adapter series (and the "compare with" run's, when one is chosen) are fetched from the
collector on the page's poll; the figure is the summary of ``adapter_chart`` (a band, a median and a few
layers), and the alerts come from ``alerts`` with the history store's quality figures, so only those
travel to the browser.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping

import dash
import dash_bootstrap_components as dbc
from acestep_viz.dashboard import ids
from acestep_viz.dashboard.adapter_chart import adapter_figure
from acestep_viz.dashboard.alerts import Alert, Thresholds, alerts
from acestep_viz.dashboard.client import CollectorClient, CollectorError, CollectorRequestError
from dash import Input, Output, State, html
from dash.exceptions import PreventUpdate

log = logging.getLogger(__name__)


def thresholds_from(settings: Mapping[str, Any] | None) -> Thresholds:
    """``Thresholds`` from the dashboard's ``alert_*`` settings (missing ones keep their defaults)."""
    fields = Thresholds.__dataclass_fields__
    return Thresholds(**{name[len("alert_"):]: value for name, value in (settings or {}).items()
                         if name.startswith("alert_") and name[len("alert_"):] in fields})


def fetch_layers(client: CollectorClient, run: str | None) -> dict:
    """The run's layers, or {} when it has none (an unknown run, or no measurement yet)."""
    if not run:
        return {}
    try:
        return client.adapter(run).get("layers") or {}
    except CollectorRequestError as exc:
        if exc.reason == "unknown_run":
            return {}
        raise


def alert_list(found: list[Alert]) -> list:
    return [dbc.Alert([html.Strong(alert.title + ": "), alert.evidence], color="warning", className="py-1 px-2 mb-1",
                      id={"type": "viz-alert", "kind": alert.kind}) for alert in found]


def adapter_outputs(client: CollectorClient, limits: Thresholds, seen: Mapping[str, Any] | None,
                    history: Mapping[str, Any] | None, compare: str | None, drawn: Any) -> tuple:
    """(figure, alert list, what they were drawn from); PreventUpdate when that has not changed."""
    run = (seen or {}).get("run")
    try:
        runs = {run: fetch_layers(client, run)} if run else {}
        if compare and compare != run:
            runs[compare] = fetch_layers(client, compare)
    except CollectorError:  # unavailable, or a refused request: the status badge says why
        raise PreventUpdate from None
    quality = (history or {}).get("quality") if (history or {}).get("run") == run else None
    key = {"runs": {name: {layer: len(s.get("step") or []) for layer, s in layers.items()}
                    for name, layers in runs.items()},
           "last": {name: max((s["step"][-1] for s in layers.values() if s.get("step")), default=None)
                    for name, layers in runs.items()},
           "compare": compare, "quality": quality}
    if key == drawn:
        raise PreventUpdate
    return adapter_figure(runs, compare), alert_list(alerts(runs.get(run), quality, limits)), key


def register(app: dash.Dash, client: CollectorClient, limits: Thresholds) -> None:
    @app.callback(Output(ids.ADAPTER_GRAPH, "figure"), Output(ids.ALERTS, "children"),
                  Output(ids.ADAPTER_SEEN, "data"), Input(ids.INTERVAL, "n_intervals"),
                  Input(ids.VERSION_STORE, "data"), Input(ids.HISTORY_STORE, "data"),
                  Input(ids.COMPARE_RUN, "data"), State(ids.ADAPTER_SEEN, "data"))
    def draw(_ticks, seen, history, compare, drawn):
        return adapter_outputs(client, limits, seen, history, compare, drawn)
