"""Wiring of the health charts: the shown run's history, plus a "compare with" run's when one is picked.

``health_outputs`` is a plain function (client and browser state in, figure out), tested without a
browser; ``register`` only connects it to the component ids.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping

import dash
from acestep_viz.dashboard import ids
from acestep_viz.dashboard.callbacks import fetch_history
from acestep_viz.dashboard.client import CollectorClient, CollectorError
from acestep_viz.dashboard.health_charts import health_figure, stores_for
from dash import Input, Output

log = logging.getLogger(__name__)


def health_outputs(client: CollectorClient, history: Mapping[str, Any] | None, tag: str | None,
                   compare: str | None) -> dict:
    """The health figure of the shown run (solid) and, when ``compare`` names another run, that run's
    (dashed); a compare run the collector cannot serve is left out."""
    shown = (history or {}).get("run") or ""
    compared = []
    if compare and compare != shown:
        try:
            compared.append((compare, fetch_history(client, compare)))
        except CollectorError as exc:
            log.info("cannot draw the compared run %s: %s", compare, exc)
    return health_figure(stores_for(history, compared), shown, tag or None)


def register(app: dash.Dash, client: CollectorClient) -> None:
    @app.callback(Output(ids.HEALTH_GRAPH, "figure"), Input(ids.HISTORY_STORE, "data"),
                  Input(ids.TAG_SELECT, "value"), Input(ids.COMPARE_RUN, "data"))
    def health(history, tag, compare):
        return health_outputs(client, history, tag, compare)
