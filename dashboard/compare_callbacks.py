"""The "Compare with" picker and the joint map's polling.

``poll_compare`` is a plain function (a client in, the new COMPARE_SEEN value out) so it is tested
without a browser. The joint map's points stay in the server's ReplyCache, like snapshots; the
browser keeps only {"runs", "version", "current"}, and the figure redraws when that changes
(dashboard/view_callbacks.py).
"""
from __future__ import annotations

import logging
from typing import Any, Mapping

import dash
from acestep_viz.dashboard import ids
from acestep_viz.dashboard.cache import ReplyCache
from acestep_viz.dashboard.client import CollectorClient, CollectorError, CollectorRequestError
from acestep_viz.dashboard.compare import compare_options, compared_pair
from dash import Input, Output, State, no_update
from dash.exceptions import PreventUpdate

log = logging.getLogger(__name__)


def compare_key(pair, version: int | None) -> tuple:
    return ("compare", *pair, version)


def poll_compare(client: CollectorClient, cache: ReplyCache, seen: Mapping[str, Any] | None,
                 compare_run: str | None, shown: Mapping[str, Any] | None) -> dict | None:
    """The joint map to draw for (the shown run, ``compare_run``): asks the collector (which keeps refitting
    a pair while it is asked for) and caches the reply; None when there is nothing to compare."""
    pair = compared_pair((seen or {}).get("run"), compare_run)
    if pair is None:
        if shown is None:
            raise PreventUpdate
        return None
    same = shown is not None and list(shown.get("runs") or []) == list(pair)
    try:
        reply = client.compare(list(pair), since=shown.get("version") if same else None)
    except CollectorRequestError as exc:
        if exc.reason == "unknown_run":  # the compared run was deleted
            return None
        raise PreventUpdate from None
    except CollectorError as exc:  # the main poll shows the collector's state in the badge
        log.info("cannot compare runs: %s", exc)
        raise PreventUpdate from None
    if reply.get("changed"):
        cache.put(compare_key(pair, reply.get("version")), reply)
    new = {"runs": list(pair), "version": reply.get("version"), "current": bool(reply.get("current"))}
    if new == dict(shown or {}):
        raise PreventUpdate
    return new


def joint_reply(client: CollectorClient, cache: ReplyCache, compared: Mapping[str, Any] | None,
                run: str | None) -> tuple[dict | None, tuple[str, str] | None]:
    """(the cached joint map, its pair) to draw beside ``run``'s snapshot; (None, None) when not comparing."""
    runs = list((compared or {}).get("runs") or [])
    version = (compared or {}).get("version")
    if len(runs) != 2 or version is None or runs[0] != run:
        return None, None
    pair = (runs[0], runs[1])
    reply = cache.fetch(compare_key(pair, version), lambda: client.compare(runs))
    return {**reply, "current": (compared or {}).get("current", reply.get("current"))}, pair


def register(app: dash.Dash, client: CollectorClient, cache: ReplyCache) -> None:
    @app.callback(Output(ids.COMPARE_SELECT, "options"), Input(ids.RUN_SELECT, "options"))
    def options(run_options):
        return compare_options(run_options)

    @app.callback(Output(ids.COMPARE_RUN, "data"), Input(ids.COMPARE_SELECT, "value"))
    def pick(value):
        return value or None

    @app.callback(Output(ids.COMPARE_SEEN, "data"), Input(ids.INTERVAL, "n_intervals"),
                  Input(ids.COMPARE_RUN, "data"), Input(ids.VERSION_STORE, "data"), State(ids.COMPARE_SEEN, "data"))
    def poll(_ticks, compare_run, seen, shown):
        result = poll_compare(client, cache, seen, compare_run, shown)
        return no_update if result == shown else result
