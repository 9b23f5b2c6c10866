"""Embed mode: ``?embed=1`` (ACETrainer's tab) hides the header card the tab already stands for.

The layout is built once for every visitor, so the switch happens in the browser: a clientside
callback reads the page's query string, hides the header card and shows a compact copy of the
status badge at the end of the controls row. Controls, stat boxes, figure and guide stay.
"""
from __future__ import annotations

import dash
import dash_bootstrap_components as dbc
from acestep_viz.dashboard import ids
from acestep_viz.dashboard.status import BADGES, WAITING
from dash import Input, Output, dcc, html

EMBED_PARAM = "embed"

# "embed", "embed=1", "embed=true" switch it on; "embed=0" / "embed=false" (or no parameter) do not
TOGGLE_JS = f"""function (search) {{
    var value = new URLSearchParams(search || '').get('{EMBED_PARAM}');
    var embedded = value !== null && ['0', 'false', 'no'].indexOf(value.toLowerCase()) < 0;
    return [embedded ? {{display: 'none'}} : {{}}, embedded ? {{}} : {{display: 'none'}}];
}}"""

MIRROR_BADGE_JS = "function (label, color, title) { return [label, color, title]; }"


def location() -> dcc.Location:
    return dcc.Location(id=ids.URL, refresh=False)


def embed_status() -> html.Div:
    """The status badge's stand-in in the controls row, shown only in embed mode."""
    waiting = BADGES[WAITING]
    return html.Div(dbc.Badge(waiting.label, id=ids.EMBED_BADGE, color=waiting.color, title=waiting.title, pill=True,
                              className="viz-badge"),
                    id=ids.EMBED_STATUS, style={"display": "none"}, className="ms-auto")


def register_embed(app: dash.Dash) -> None:
    app.clientside_callback(TOGGLE_JS, Output(ids.HEADER, "style"), Output(ids.EMBED_STATUS, "style"),
                            Input(ids.URL, "search"))
    app.clientside_callback(MIRROR_BADGE_JS, Output(ids.EMBED_BADGE, "children"), Output(ids.EMBED_BADGE, "color"),
                            Output(ids.EMBED_BADGE, "title"), Input(ids.STATUS_BADGE, "children"),
                            Input(ids.STATUS_BADGE, "color"), Input(ids.STATUS_BADGE, "title"))
