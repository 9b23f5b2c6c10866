"""The page: header, controls, stat boxes, the figure and the guide. No callbacks here."""
from __future__ import annotations

import dash_bootstrap_components as dbc
from dash import dcc, html

from dashboard import ids
from dashboard.embed import embed_status, location
from dashboard.figures import empty_figure
from dashboard.status import BADGES, WAITING, status

INTERVAL_CHOICES_S = (5, 10, 15, 30, 60)
STAT_LABELS = {"latent": "Latent Space", "lora": "LoRA Outputs", "prompt": "Prompt Space"}
PAUSE_LABEL, RESUME_LABEL = "Pause Auto-Update", "Resume Auto-Update"
CLEAR_MESSAGE = ("Clear all collected embeddings for every run? This cannot be undone: "
                 "the collector forgets the stored samples and projections.")


def interval_options(default_s: float) -> list[dict[str, str]]:
    """The interval choices, plus the configured default when it is not one of them."""
    choices = sorted(set(INTERVAL_CHOICES_S) | {default_s})
    return [{"label": f"{_format_seconds(s)} s", "value": _format_seconds(s)} for s in choices]


def _format_seconds(seconds: float) -> str:
    return f"{seconds:g}"


def header() -> dbc.Card:
    waiting = BADGES[WAITING]
    return dbc.Card(dbc.CardBody([
        html.Div([
            html.H4("PaCMAP Embedding Visualization", className="viz-title mb-1"),
            dbc.Badge(waiting.label, id=ids.STATUS_BADGE, color=waiting.color, title=waiting.title,
                      pill=True, className="viz-badge ms-3"),
        ], className="d-flex align-items-center flex-wrap"),
        html.P("Live 2-D PaCMAP projections of the audio latents, LoRA layer outputs and prompt "
               "embeddings captured while your LoRA adapter trains.", className="viz-muted mb-0"),
    ]), id=ids.HEADER, className="viz-card mb-3")


def controls(interval_s: float) -> dbc.Card:
    return dbc.Card(dbc.CardBody(html.Div([
        dbc.Button("Refresh Now", id=ids.REFRESH_BUTTON, className="viz-button-accent me-2", n_clicks=0),
        dbc.Button(PAUSE_LABEL, id=ids.PAUSE_BUTTON, color="secondary", className="me-2", n_clicks=0),
        dbc.Button("Clear All Data", id=ids.CLEAR_BUTTON, color="danger", outline=True, className="me-4",
                   n_clicks=0),
        html.Div([
            dbc.Label("Update Interval", html_for=ids.INTERVAL_SELECT, className="viz-muted mb-0 me-2"),
            dbc.Select(id=ids.INTERVAL_SELECT, options=interval_options(interval_s),
                       value=_format_seconds(interval_s), size="sm", className="viz-select"),
        ], className="d-flex align-items-center"),
        dcc.ConfirmDialog(id=ids.CLEAR_CONFIRM, message=CLEAR_MESSAGE),
        embed_status(),
    ], className="d-flex align-items-center flex-wrap gap-2")), className="viz-card mb-3")


def stat_box(space: str) -> dbc.Col:
    return dbc.Col(dbc.Card(dbc.CardBody([
        html.Div(STAT_LABELS[space], className="viz-stat-label"),
        html.Div("0 samples", id=ids.STAT_IDS[space], className="viz-stat-value"),
    ]), className="viz-card viz-stat h-100"), md=4, className="mb-3")


def stat_boxes() -> dbc.Row:
    return dbc.Row([stat_box(space) for space in STAT_LABELS])


def graph() -> dbc.Card:
    return dbc.Card(dbc.CardBody(dcc.Graph(
        id=ids.GRAPH, figure=empty_figure(),
        config={"displaylogo": False, "responsive": True, "scrollZoom": True,
                "modeBarButtonsToRemove": ["select2d", "lasso2d"]},
        style={"height": "540px"},
    ), className="p-0"), className="viz-card viz-graph-card mb-3")


GUIDE_PANELS = (
    ("Latent Space (Audio)",
     "Each point is one training clip in the audio autoencoder's (DCAE) latent space. Clips that "
     "sound alike land close together, so genres and recording styles should form clusters. "
     "The autoencoder is frozen: this panel shows your data set, not the adapter."),
    ("LoRA Layer Outputs",
     "Each point is the output of one LoRA-adapted layer for one sample, coloured by layer. It shows "
     "how the adapter layers transform representations as training goes on. If every layer looks "
     "the same, or nothing changes from step to step, the adapter may not be learning."),
    ("Prompt Embeddings",
     "Each point is a text prompt as the (frozen) text encoder sees it. Similar prompts cluster; "
     "well separated prompt clusters make it easier for the adapter to tell styles apart."),
    ("Colours",
     "Latent and prompt points are coloured by training step: dark points are early, bright points "
     "are late. Structure should grow over time. LoRA points are coloured by layer."),
)

TUNING_TIPS = (
    "Capture every Nth step instead of every step to lower the overhead on long runs.",
    "Use smaller buffers (for example 250 samples per space) for faster projections.",
    "Re-project less often (for example every 100 new samples) on slow machines.",
    "Fewer neighbours (for example 5) make PaCMAP faster on small data sets.",
    "Choose a longer update interval if the browser feels slow.",
)


def guide() -> html.Details:
    items = [html.Li([html.Strong(f"{name}: "), text]) for name, text in GUIDE_PANELS]
    tips = [html.Li(tip) for tip in TUNING_TIPS]
    return html.Details([
        html.Summary("Understanding the Visualization", className="viz-guide-summary"),
        html.Div([
            html.Ul(items, className="mb-2"),
            html.Div("Tuning for speed", className="viz-stat-label mt-2"),
            html.Ul(tips, className="mb-0"),
        ], className="viz-guide-body"),
    ], id=ids.GUIDE, className="viz-card viz-guide mb-3")


def stores_and_timer(interval_s: float) -> html.Div:
    return html.Div([
        dcc.Interval(id=ids.INTERVAL, interval=int(interval_s * 1000), n_intervals=0),
        dcc.Store(id=ids.VERSION_STORE, data={"run": None, "version": None}),
        dcc.Store(id=ids.STATUS_STORE, data=status(WAITING)),
    ])


def page(interval_s: float) -> dbc.Container:
    return dbc.Container([
        location(),
        header(),
        controls(interval_s),
        stat_boxes(),
        graph(),
        guide(),
        stores_and_timer(interval_s),
    ], fluid=True, id=ids.ROOT, className="acestep-viz py-3")
