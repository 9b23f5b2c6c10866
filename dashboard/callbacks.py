"""Thin glue between the page and the collector. State lives in the browser's dcc.Stores.

``poll_outputs`` and ``clear_outputs`` are plain functions (a client in, output values out)
so they can be tested without a browser; ``register`` only wires them to component ids.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import dash
from dash import Input, Output, State, ctx, no_update
from dash.exceptions import PreventUpdate

from dashboard import ids
from dashboard.client import CollectorClient, CollectorError, CollectorUnavailable
from dashboard.figures import SPACES, build_figure, empty_figure
from dashboard.layout import PAUSE_LABEL, RESUME_LABEL
from dashboard.status import CLEARED, ERROR, OFFLINE, badge_for, stat_texts, status, status_from_snapshot

log = logging.getLogger(__name__)

NO_VERSION = {"run": None, "version": None}


def fetch_snapshot(client: CollectorClient, seen: Mapping[str, Any] | None, forced: bool) -> dict[str, Any]:
    """The newest run's snapshot since the version this browser has; full when the run changed."""
    seen = seen or NO_VERSION
    since = None if forced else seen.get("version")
    snapshot = client.snapshot(None, since)
    if not snapshot.get("changed") and snapshot.get("run") != seen.get("run"):
        snapshot = client.snapshot(snapshot.get("run"), None)  # a newer run took over
    return snapshot


def _unless_same(new: Any, old: Any) -> Any:
    return no_update if new == old else new


def poll_outputs(client: CollectorClient, seen: Mapping[str, Any] | None, current: Mapping[str, Any] | None,
                 shown: Sequence[Any], forced: bool = False) -> tuple:
    """(figure, latent, lora, prompt stat texts, status, version) with no_update where unchanged."""
    try:
        snapshot = fetch_snapshot(client, seen, forced)
        figure = build_figure(snapshot) if snapshot.get("changed") else no_update
    except CollectorUnavailable as exc:
        return _only_status(status(OFFLINE, str(exc)), current)
    except CollectorError as exc:
        return _only_status(status(ERROR, str(exc)), current)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:  # a malformed snapshot
        log.exception("cannot draw the collector's snapshot")
        return _only_status(status(ERROR, f"cannot draw the snapshot: {exc}"), current)
    texts = stat_texts(snapshot)
    outputs = (
        figure,
        *(_unless_same(texts[space], old) for space, old in zip(SPACES, shown)),
        _unless_same(status_from_snapshot(snapshot, current), current),
        _unless_same({"run": snapshot.get("run"), "version": snapshot.get("version")}, seen),
    )
    if all(value is no_update for value in outputs):
        raise PreventUpdate  # nothing changed: the browser gets an empty 204
    return outputs


def _only_status(new_status: dict, current: Mapping[str, Any] | None) -> tuple:
    if new_status == current:
        raise PreventUpdate
    return (no_update,) * len(SPACES) + (no_update, new_status, no_update)


def clear_outputs(client: CollectorClient) -> tuple:
    """(figure, stat texts..., status, version) after asking the collector to forget everything."""
    try:
        client.clear()
    except CollectorUnavailable as exc:
        return (no_update,) * (len(SPACES) + 1) + (status(OFFLINE, str(exc)), no_update)
    except CollectorError as exc:
        return (no_update,) * (len(SPACES) + 1) + (status(ERROR, str(exc)), no_update)
    return (empty_figure(), *("0 samples" for _ in SPACES), status(CLEARED), dict(NO_VERSION))


def register(app: dash.Dash, client: CollectorClient) -> None:
    stat_outputs = [Output(ids.STAT_IDS[space], "children") for space in SPACES]
    stat_states = [State(ids.STAT_IDS[space], "children") for space in SPACES]

    @app.callback(
        Output(ids.GRAPH, "figure"), *stat_outputs,
        Output(ids.STATUS_STORE, "data"), Output(ids.VERSION_STORE, "data"),
        Input(ids.INTERVAL, "n_intervals"), Input(ids.REFRESH_BUTTON, "n_clicks"),
        State(ids.VERSION_STORE, "data"), State(ids.STATUS_STORE, "data"), *stat_states,
    )
    def poll(_ticks, _clicks, seen, current, *shown):
        return poll_outputs(client, seen, current, shown, forced=ctx.triggered_id == ids.REFRESH_BUTTON)

    @app.callback(
        Output(ids.GRAPH, "figure", allow_duplicate=True),
        *[Output(ids.STAT_IDS[space], "children", allow_duplicate=True) for space in SPACES],
        Output(ids.STATUS_STORE, "data", allow_duplicate=True),
        Output(ids.VERSION_STORE, "data", allow_duplicate=True),
        Input(ids.CLEAR_CONFIRM, "submit_n_clicks"),
        prevent_initial_call=True,
    )
    def clear(_confirmed):
        return clear_outputs(client)

    @app.callback(Output(ids.CLEAR_CONFIRM, "displayed"), Input(ids.CLEAR_BUTTON, "n_clicks"),
                  prevent_initial_call=True)
    def ask_before_clearing(_clicks):
        return True

    @app.callback(Output(ids.INTERVAL, "disabled"), Output(ids.PAUSE_BUTTON, "children"),
                  Input(ids.PAUSE_BUTTON, "n_clicks"), State(ids.INTERVAL, "disabled"),
                  prevent_initial_call=True)
    def toggle_pause(_clicks, disabled):
        paused = not disabled
        return paused, RESUME_LABEL if paused else PAUSE_LABEL

    @app.callback(Output(ids.INTERVAL, "interval"), Input(ids.INTERVAL_SELECT, "value"),
                  prevent_initial_call=True)
    def set_interval(seconds):
        try:
            return max(int(float(seconds) * 1000), 250)
        except (TypeError, ValueError):
            raise PreventUpdate from None

    @app.callback(Output(ids.STATUS_BADGE, "children"), Output(ids.STATUS_BADGE, "color"),
                  Output(ids.STATUS_BADGE, "title"),
                  Input(ids.STATUS_STORE, "data"), Input(ids.INTERVAL, "disabled"))
    def show_status(current, paused):
        badge = badge_for(current, bool(paused))
        return badge.label, badge.color, badge.title
