"""Polling the collector, clearing, pausing and the status badge.

``poll_outputs`` and ``clear_outputs`` are plain functions (a client in, output values out)
so they can be tested without a browser; ``register`` only wires them to component ids.
The points themselves stay in the server's ReplyCache; the browser keeps (run, version) keys
and redraws through dashboard/view_callbacks.py when they change.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping, NamedTuple, Sequence

import dash
from acestep_viz.dashboard import ids
from acestep_viz.dashboard.cache import ReplyCache
from acestep_viz.dashboard.client import CollectorClient, CollectorError, CollectorUnavailable
from acestep_viz.dashboard.figures import SPACES
from acestep_viz.dashboard.layout import (
    LATEST_RUN_OPTION,
    NO_STALENESS,
    NO_VERSION,
    PAUSE_LABEL,
    RESUME_LABEL,
    delete_message,
)
from acestep_viz.dashboard.scrubber import history_store
from acestep_viz.dashboard.status import CLEARED, ERROR, OFFLINE, badge_for, stat_texts, status, status_from_snapshot
from dash import Input, Output, State, ctx, no_update
from dash.exceptions import PreventUpdate

log = logging.getLogger(__name__)


class PollOutputs(NamedTuple):
    seen: Any  # VERSION_STORE: {"run", "version", "refresh"}
    latent: Any  # stat box texts
    lora: Any
    prompt: Any
    status: Any  # STATUS_STORE
    staleness: Any  # STALENESS_STORE: {"step", "last_seen"}
    history: Any  # HISTORY_STORE (dashboard/scrubber.py)
    runs: Any  # RUN_SELECT options


def snapshot_key(run: str | None, version: int | None) -> tuple:
    return ("snapshot", run, version)


def fetch_snapshot(client: CollectorClient, seen: Mapping[str, Any] | None, forced: bool,
                   run: str | None = None) -> dict[str, Any]:
    """The run's snapshot since the version this browser has; full when the run changed.

    ``run`` None follows the most recently active run.
    """
    seen = seen or NO_VERSION
    switched = run is not None and run != seen.get("run")
    since = None if forced or switched else seen.get("version")
    snapshot = client.snapshot(run, since)
    if not snapshot.get("changed") and snapshot.get("run") != seen.get("run"):
        snapshot = client.snapshot(snapshot.get("run"), None)  # a newer run took over
    return snapshot


def fetch_history(client: CollectorClient, run: str | None) -> dict:
    return history_store(run, {space: client.history(run, space).get("frames") or [] for space in SPACES})


def run_options(client: CollectorClient) -> list[dict[str, Any]]:
    """The run selector's choices: follow the latest run, then every run, newest first."""
    return [LATEST_RUN_OPTION] + [
        {"label": run["run"], "value": run["run"]} for run in client.runs()]


def _unless_same(new: Any, old: Any) -> Any:
    return no_update if new == old else new


def poll_outputs(client: CollectorClient, cache: ReplyCache, seen: Mapping[str, Any] | None,
                 current: Mapping[str, Any] | None, shown: Sequence[Any], staleness: Any = None,
                 forced: bool = False, run: str | None = None) -> PollOutputs:
    """Everything one poll changes, with no_update where nothing did; PreventUpdate if nothing at all."""
    seen = seen or NO_VERSION
    try:
        snapshot = fetch_snapshot(client, seen, forced, run or None)
        changed = bool(snapshot.get("changed"))
        if changed:
            cache.put(snapshot_key(snapshot.get("run"), snapshot.get("version")), snapshot)
            # fixed for a (run, version): every browser tab's poll of that version shares one fetch
            history = cache.fetch(("history", snapshot.get("run"), snapshot.get("version")),
                                  lambda: fetch_history(client, snapshot.get("run")))
            runs = run_options(client)
    except CollectorUnavailable as exc:
        return _only_status(status(OFFLINE, str(exc)), current)
    except CollectorError as exc:
        return _only_status(status(ERROR, str(exc)), current)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:  # a malformed reply
        log.exception("cannot use the collector's reply")
        return _only_status(status(ERROR, f"cannot read the collector's reply: {exc}"), current)
    texts = stat_texts(snapshot)
    new_seen = {"run": snapshot.get("run"), "version": snapshot.get("version"),
                "refresh": int(seen.get("refresh") or 0) + (1 if forced else 0)}
    outputs = PollOutputs(
        _unless_same(new_seen, dict(seen)),
        *(_unless_same(texts[space], old) for space, old in zip(SPACES, shown)),
        _unless_same(status_from_snapshot(snapshot, current), current),
        _unless_same({"step": snapshot.get("last_step", -1), "last_seen": snapshot.get("last_seen")}, staleness),
        history if changed else no_update,
        runs if changed else no_update,
    )
    if all(value is no_update for value in outputs):
        raise PreventUpdate  # nothing changed: the browser gets an empty 204
    return outputs


def _only_status(new_status: dict, current: Mapping[str, Any] | None) -> PollOutputs:
    if new_status == current:
        raise PreventUpdate
    return _status_only(new_status)


def _status_only(new_status: dict) -> PollOutputs:
    return PollOutputs(*[no_update] * len(PollOutputs._fields))._replace(status=new_status)


def clear_outputs(client: CollectorClient, cache: ReplyCache) -> PollOutputs:
    """The page after asking the collector to forget everything (or why it could not)."""
    try:
        client.clear()
    except CollectorUnavailable as exc:
        return _status_only(status(OFFLINE, str(exc)))
    except CollectorError as exc:
        return _status_only(status(ERROR, str(exc)))
    cache.clear()
    return PollOutputs(dict(NO_VERSION), *("0 samples" for _ in SPACES), status(CLEARED),
                       dict(NO_STALENESS), history_store(None, {}), [LATEST_RUN_OPTION])


def delete_run_outputs(client: CollectorClient, cache: ReplyCache, run: str | None) -> tuple[str, Any, Any]:
    """(message, run selector value, version store) after asking the collector to delete ``run``'s stored data;
    on success the page follows the latest run again and forgets what it had seen."""
    if not run:
        return "No run is shown: nothing to delete.", no_update, no_update
    try:
        client.delete(run)
    except CollectorError as exc:
        return f"Not deleted: {exc}", no_update, no_update
    cache.clear()
    return f"Deleted the stored data of run {run}.", "", dict(NO_VERSION)


def interval_disabled(hidden: bool, pause_label: str) -> bool:
    """Updates stop while nobody can see the page, and while the user has paused them."""
    return hidden or pause_label == RESUME_LABEL


def _poll_targets(duplicate: bool = False) -> list[Output]:
    return [Output(ids.VERSION_STORE, "data", allow_duplicate=duplicate),
            *[Output(ids.STAT_IDS[space], "children", allow_duplicate=duplicate) for space in SPACES],
            Output(ids.STATUS_STORE, "data", allow_duplicate=duplicate),
            Output(ids.STALENESS_STORE, "data", allow_duplicate=duplicate),
            Output(ids.HISTORY_STORE, "data", allow_duplicate=duplicate),
            Output(ids.RUN_SELECT, "options", allow_duplicate=duplicate)]


def register(app: dash.Dash, client: CollectorClient, cache: ReplyCache) -> None:
    stat_states = [State(ids.STAT_IDS[space], "children") for space in SPACES]

    @app.callback(
        *_poll_targets(),
        Input(ids.INTERVAL, "n_intervals"), Input(ids.REFRESH_BUTTON, "n_clicks"), Input(ids.RUN_SELECT, "value"),
        State(ids.VERSION_STORE, "data"), State(ids.STATUS_STORE, "data"), State(ids.STALENESS_STORE, "data"),
        *stat_states,
    )
    def poll(_ticks, _clicks, run, seen, current, staleness, *shown):
        forced = ctx.triggered_id == ids.REFRESH_BUTTON
        return tuple(poll_outputs(client, cache, seen, current, shown, staleness, forced=forced, run=run))

    @app.callback(*_poll_targets(duplicate=True), Output(ids.SELECTION_STORE, "data", allow_duplicate=True),
                  Input(ids.CLEAR_CONFIRM, "submit_n_clicks"), prevent_initial_call=True)
    def clear(_confirmed):
        # the cleared clips are gone: a new run must not inherit their highlight
        return (*clear_outputs(client, cache), [])

    @app.callback(Output(ids.CLEAR_CONFIRM, "displayed"), Input(ids.CLEAR_BUTTON, "n_clicks"),
                  prevent_initial_call=True)
    def ask_before_clearing(_clicks):
        return True

    @app.callback(Output(ids.DELETE_RUN_CONFIRM, "displayed"), Output(ids.DELETE_RUN_CONFIRM, "message"),
                  Output(ids.DELETE_RUN_TARGET, "data"), Output(ids.DELETE_RUN_MESSAGE, "children"),
                  Input(ids.DELETE_RUN_BUTTON, "n_clicks"), State(ids.VERSION_STORE, "data"),
                  prevent_initial_call=True)
    def ask_before_deleting(_clicks, seen):
        run = (seen or {}).get("run")
        if not run:
            return False, no_update, None, "No run is shown: nothing to delete."
        return True, delete_message(run), run, ""

    @app.callback(Output(ids.DELETE_RUN_MESSAGE, "children", allow_duplicate=True),
                  Output(ids.RUN_SELECT, "value"), Output(ids.VERSION_STORE, "data", allow_duplicate=True),
                  Input(ids.DELETE_RUN_CONFIRM, "submit_n_clicks"), State(ids.DELETE_RUN_TARGET, "data"),
                  prevent_initial_call=True)
    def delete_run(_confirmed, run):
        return delete_run_outputs(client, cache, run)

    @app.callback(Output(ids.INTERVAL, "disabled", allow_duplicate=True), Input(ids.UPDATES_HIDDEN, "data"),
                  State(ids.PAUSE_BUTTON, "children"), prevent_initial_call=True)
    def pause_while_hidden(hidden, pause_label):
        return interval_disabled(bool(hidden), pause_label)

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
