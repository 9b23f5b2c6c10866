"""Drawing what the user chose: the live map or a scrubbed frame, coloured, filtered, selected.

``render_outputs`` is a plain function of (client, cache, browser state) so it is tested
without a browser; ``register`` wires it and the small scrubber, Play and selection callbacks.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping

import dash
import dash_bootstrap_components as dbc
from acestep_viz.dashboard import ids
from acestep_viz.dashboard.audio_route import AudioLibrary
from acestep_viz.dashboard.cache import ReplyCache
from acestep_viz.dashboard.callbacks import fetch_history, snapshot_key
from acestep_viz.dashboard.client import CollectorClient, CollectorError
from acestep_viz.dashboard.compare_callbacks import joint_reply
from acestep_viz.dashboard.figures import SPACES, build_figure, layer_names, snapshot_tags, space_points
from acestep_viz.dashboard.quality_chart import quality_figure
from acestep_viz.dashboard.scrubber import (
    is_live,
    live_position,
    marks,
    next_position,
    position_label,
    position_of_step,
    step_at,
    versions_at,
)
from acestep_viz.dashboard.selection import details, selected_ids
from acestep_viz.dashboard.view import View, view_from_controls
from dash import Input, Output, State, ctx, html, no_update
from dash.exceptions import PreventUpdate

log = logging.getLogger(__name__)

PLAY_LABEL, STOP_LABEL = "▶ Play", "■ Stop"
DETAIL_COLUMNS = (("key", "Clip"), ("prompt", "Prompt texts"), ("steps", "Steps seen"), ("loss", "Loss (newest)"),
                  ("layers", "LoRA layers"), ("spaces", "Spaces"))
NO_SELECTION = ("Click a point, or draw a box or lasso (toolbar above the maps), to pick clips: they are "
                "highlighted in all three panels and listed here.")

STALENESS_JS = """function (_tick, data) {
    if (!data || data.last_seen === null || data.last_seen === undefined) { return 'No frames received yet'; }
    var age = Math.max(0, Date.now() / 1000 - data.last_seen);
    var text = age < 90 ? Math.round(age) + ' s' : age < 5400 ? Math.round(age / 60) + ' min'
                                                             : (age / 3600).toFixed(1) + ' h';
    return 'Last frame: step ' + data.step + ', ' + text + ' ago';
}"""


def live_snapshot(client: CollectorClient, cache: ReplyCache, seen: Mapping[str, Any] | None) -> dict | None:
    seen = seen or {}
    if seen.get("version") is None:
        return None  # nothing received yet, or just cleared
    run = seen.get("run")
    return cache.fetch(snapshot_key(run, seen["version"]), lambda: client.snapshot(run, None))


def frame_snapshot(client: CollectorClient, cache: ReplyCache, run: str | None,
                   versions: Mapping[str, int | None]) -> dict:
    """A snapshot-shaped dict made of one history frame per space (empty where none existed yet)."""
    spaces = {}
    for space in SPACES:
        version = versions.get(space)
        if version is None:
            spaces[space] = {"buffered": 0, "projected": 0, "points": {}}
            continue
        frame = cache.fetch(("frame", run, space, version),
                            lambda s=space, v=version: client.history(run, s, v)["frame"])
        n = len(frame["points"]["x"])
        spaces[space] = {"buffered": n, "projected": n, "method": frame.get("method"), "points": frame["points"]}
    return {"run": run, "version": max([v for v in versions.values() if v is not None], default=None),
            "spaces": spaces}


def render_outputs(client: CollectorClient, cache: ReplyCache, seen: Mapping[str, Any] | None,
                   history: Mapping[str, Any] | None, position: Any, view: View,
                   shown_layers: list | None = None, shown_tags: list | None = None,
                   audio: AudioLibrary | None = None, compared: Mapping[str, Any] | None = None) -> tuple:
    """(figure, LoRA layer options, details card, tag options) for the live map or the scrubbed step;
    live, with a ``compared`` joint map (COMPARE_SEEN), the LoRA panel shows it.

    The figure's layout.meta says which: "live" true for the live map. The browser moves points to their
    new place only from one live version to the next (assets/acestep-viz-motion.js), never for a scrub.
    """
    live = is_live(history, position)
    joint = pair = None
    try:
        if live:
            snapshot = live_snapshot(client, cache, seen)
            drawn = (snapshot or {}).get("version")
            joint, pair = joint_reply(client, cache, compared, (snapshot or {}).get("run"))
        else:
            run = (history or {}).get("run") or (seen or {}).get("run")
            drawn = versions_at(history, position)
            snapshot = frame_snapshot(client, cache, run, drawn)
            newest = cache.get(snapshot_key((seen or {}).get("run"), (seen or {}).get("version"))) or {}
            snapshot["model"] = newest.get("model")  # names the prompt panel; the scrub asks the collector nothing more
    except CollectorError as exc:  # the poll shows the collector's state in the badge
        log.info("cannot draw: %s", exc)
        raise PreventUpdate from None
    layers = [{"label": name, "value": name} for name in layer_names(snapshot)]
    tags = cache.fetch(("tags", (snapshot or {}).get("run"), _drawn_key(drawn)), lambda: tag_options(snapshot))
    figure = build_figure(snapshot, view, snapshot_hover(cache, snapshot, drawn), joint, pair)
    figure["layout"]["meta"]["live"] = live
    return (figure,
            no_update if layers == (shown_layers or []) else layers,
            details_card(snapshot, view.selected, audio),
            no_update if tags == (shown_tags or []) else tags)


def snapshot_hover(cache: ReplyCache, snapshot: Mapping[str, Any] | None, drawn: Any) -> dict[str, list[str]]:
    """Every point's hover label per space, built once per (run, drawn versions) and kept in the cache."""
    run = (snapshot or {}).get("run")
    return cache.fetch(("hover", run, _drawn_key(drawn)), lambda: {
        space: cache.hover.texts(run, space, space_points(snapshot, space)) for space in SPACES})


def _drawn_key(drawn: Any) -> Any:
    """What was drawn, as a cache key: the live snapshot's version, or each space's history frame."""
    return tuple(sorted(drawn.items())) if isinstance(drawn, Mapping) else drawn


def quality_outputs(client: CollectorClient, cache: ReplyCache, history: Mapping[str, Any] | None,
                    compared: Mapping[str, Any] | None) -> dict:
    """The quality charts of the shown run, with the compared run's lines (dashed) when comparing."""
    runs = list((compared or {}).get("runs") or [])
    if len(runs) != 2 or runs[0] != (history or {}).get("run"):
        return quality_figure(history)
    try:
        other = cache.fetch(("history", runs[1], "compare", compared.get("version")),
                            lambda: fetch_history(client, runs[1]))
    except CollectorError as exc:
        log.info("cannot fetch the compared run's history: %s", exc)
        return quality_figure(history)
    return quality_figure(history, other)


def tag_options(snapshot: Mapping[str, Any] | None) -> list[dict]:
    """The tag picker's options: every tag of the run's prompt texts, most common first, with its count."""
    return [{"label": f"{tag} ({count})", "value": tag} for tag, count in snapshot_tags(snapshot)]


def details_card(snapshot: Mapping[str, Any] | None, selected: frozenset[str],
                 audio: AudioLibrary | None = None) -> Any:
    """The selected clips' table; with ``audio``, a Listen column: a player, or why there is none."""
    if not selected:
        return html.P(NO_SELECTION, className="viz-muted mb-0")
    rows = details({space: space_points(snapshot, space) for space in SPACES}, selected)
    run = str((snapshot or {}).get("run") or "")
    listen = [html.Th("Listen")] if audio is not None else []
    head = html.Thead(html.Tr([html.Th(label) for _, label in DETAIL_COLUMNS] + listen))
    body = html.Tbody([html.Tr([html.Td(str(row[key])) for key, _ in DETAIL_COLUMNS]
                               + ([html.Td(player(audio, run, row))] if listen else [])) for row in rows])
    more = len(selected) - len(rows)
    note = html.Div(f"… and {more} more", className="viz-muted") if more > 0 else None
    return html.Div([html.Div(f"{len(selected)} clip{'s' if len(selected) != 1 else ''} selected",
                              className="viz-stat-label mb-1"),
                     dbc.Table([head, body], size="sm", bordered=False, hover=True, responsive=True,
                               className="viz-details-table mb-0"), note])


def player(audio: AudioLibrary, run: str, row: Mapping[str, Any]) -> Any:
    """An audio player for a clip whose file is found, else the reason in small text."""
    found = audio.find(run, row["key"], row.get("audio"))
    if found.path is None:
        return html.Small(found.reason, className="viz-muted viz-audio-missing")
    return html.Audio(src=audio.url(run, row["key"]), controls=True, preload="none", className="viz-audio")


def scrubber_outputs(history: Mapping[str, Any] | None, shown_step: int | None) -> tuple:
    """(max, marks, position) for a new history: Live stays Live, a past step stays that step."""
    return live_position(history), marks(history), position_of_step(history, shown_step)


def shown_step(history: Mapping[str, Any] | None, position: Any) -> int | None:
    return None if is_live(history, position) else step_at(history, position)


def register(app: dash.Dash, client: CollectorClient, cache: ReplyCache, audio: AudioLibrary | None = None) -> None:
    colour_inputs = [Input(ids.COLOUR_SELECTS[space], "value") for space in SPACES]

    @app.callback(
        Output(ids.GRAPH, "figure"), Output(ids.LAYER_FILTER, "options"), Output(ids.DETAILS, "children"),
        Output(ids.TAG_SELECT, "options"),
        Input(ids.VERSION_STORE, "data"), Input(ids.SCRUBBER, "value"), *colour_inputs,
        Input(ids.LAYER_FILTER, "value"), Input(ids.SELECTION_STORE, "data"), Input(ids.TRAJECTORY_TOGGLE, "value"),
        Input(ids.TAG_SELECT, "value"),
        Input(ids.COMPARE_SEEN, "data"),
        State(ids.HISTORY_STORE, "data"), State(ids.LAYER_FILTER, "options"), State(ids.TAG_SELECT, "options"),
    )
    def render(seen, position, latent_c, lora_c, prompt_c, layers, selected, trajectories, tag, compared, history,
               shown_layers, shown_tags):
        view = view_from_controls((latent_c, lora_c, prompt_c), layers, selected, trajectories, tag)
        return render_outputs(client, cache, seen, history, position, view, shown_layers, shown_tags, audio,
                              compared)

    @app.callback(Output(ids.SELECTION_STORE, "data"),
                  Input(ids.GRAPH, "selectedData"), Input(ids.GRAPH, "clickData"),
                  Input(ids.CLEAR_SELECTION_BUTTON, "n_clicks"), prevent_initial_call=True)
    def select(selected_data, click_data, _clear):
        if ctx.triggered_id == ids.CLEAR_SELECTION_BUTTON:
            return []
        if ctx.triggered_prop_ids and f"{ids.GRAPH}.clickData" in ctx.triggered_prop_ids:
            return selected_ids(None, click_data)
        return selected_ids(selected_data)

    @app.callback(Output(ids.SCRUBBER, "max"), Output(ids.SCRUBBER, "marks"),
                  Output(ids.SCRUBBER, "value", allow_duplicate=True),
                  Input(ids.HISTORY_STORE, "data"), State(ids.SCRUB_STEP_STORE, "data"),
                  prevent_initial_call="initial_duplicate")
    def follow_history(history, step):
        return scrubber_outputs(history, step)

    @app.callback(Output(ids.SCRUBBER_LABEL, "children"), Output(ids.SCRUB_STEP_STORE, "data"),
                  Input(ids.SCRUBBER, "value"), Input(ids.HISTORY_STORE, "data"))
    def label(position, history):
        return position_label(history, position), shown_step(history, position)

    @app.callback(Output(ids.PLAY_INTERVAL, "disabled"), Output(ids.PLAY_BUTTON, "children"),
                  Output(ids.SCRUBBER, "value", allow_duplicate=True),
                  Input(ids.PLAY_BUTTON, "n_clicks"), Input(ids.PLAY_INTERVAL, "n_intervals"),
                  State(ids.PLAY_INTERVAL, "disabled"), State(ids.SCRUBBER, "value"), State(ids.HISTORY_STORE, "data"),
                  prevent_initial_call=True)
    def play(_clicks, _ticks, stopped, position, history):
        if ctx.triggered_id == ids.PLAY_BUTTON:
            if not stopped:
                return True, PLAY_LABEL, no_update
            if not live_position(history):
                raise PreventUpdate  # no frames to play yet
            return False, STOP_LABEL, next_position(history, position) if is_live(history, position) else position
        nxt = next_position(history, position)
        if nxt >= live_position(history):
            return True, PLAY_LABEL, live_position(history)
        return no_update, no_update, nxt

    @app.callback(Output(ids.QUALITY_GRAPH, "figure"), Input(ids.HISTORY_STORE, "data"),
                  Input(ids.COMPARE_SEEN, "data"))
    def quality(history, compared):
        return quality_outputs(client, cache, history, compared)

    app.clientside_callback(STALENESS_JS, Output(ids.STALENESS, "children"),
                            Input(ids.CLOCK, "n_intervals"), Input(ids.STALENESS_STORE, "data"))
