"""The page: header, controls, stat boxes, the figure and the guide. No callbacks here."""
from __future__ import annotations

import dash_bootstrap_components as dbc
from acestep_viz.dashboard import ids
from acestep_viz.dashboard.adapter_chart import adapter_figure
from acestep_viz.dashboard.embed import embed_status, location
from acestep_viz.dashboard.export_callbacks import EXPORT_LABELS
from acestep_viz.dashboard.figures import empty_figure
from acestep_viz.dashboard.health_charts import health_figure
from acestep_viz.dashboard.quality_chart import quality_figure
from acestep_viz.dashboard.status import BADGES, WAITING, status
from acestep_viz.dashboard.view import COLOUR_CHOICES, DEFAULT_COLOUR_BY
from dash import dcc, html

INTERVAL_CHOICES_S = (5, 10, 15, 30, 60)
STAT_LABELS = {"latent": "Latent Space", "lora": "LoRA Outputs", "prompt": "Prompt Space"}
PAUSE_LABEL, RESUME_LABEL = "Pause Auto-Update", "Resume Auto-Update"
CLEAR_MESSAGE = ("Clear the maps of every run? The live view empties and stays empty after a restart. "
                 "The stored frames are kept and can still be exported; deleting a run's stored data is "
                 "the separate \"Delete Run Data\" button.")
CLEAR_TITLE = "Empty the maps of every run (the stored frames are kept, exportable)"
DELETE_TITLE = "Delete the shown run's stored frames, maps and exports for good"


def delete_message(run: str) -> str:
    return (f"Delete all stored data of run \"{run}\": its frames, saved maps and exports? "
            "This cannot be undone.")


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
        html.Div(id=ids.ALERTS, className="viz-alerts mt-2"),  # dashboard/alerts.py, one Bootstrap alert each
    ]), id=ids.HEADER, className="viz-card mb-3")


def staleness_line() -> html.Div:
    return html.Div("No frames received yet", id=ids.STALENESS, className="viz-muted viz-staleness",
                    title="When the collector last received a frame from the trainer, and its training step")


NO_VERSION = {"run": None, "version": None, "refresh": 0}  # no snapshot seen yet
NO_STALENESS = {"step": -1, "last_seen": None}  # no frame received yet
LATEST_RUN_OPTION = {"label": "Latest run (follows new runs)", "value": ""}


def run_select() -> html.Div:
    return html.Div([
        dbc.Label("Run", html_for=ids.RUN_SELECT, className="viz-muted mb-0 me-2"),
        dcc.Dropdown(id=ids.RUN_SELECT, options=[LATEST_RUN_OPTION],
                     value="", clearable=False, searchable=True, className="viz-dropdown viz-run-select"),
    ], className="d-flex align-items-center")


def compare_select() -> html.Div:
    return html.Div([
        dbc.Label("Compare with", html_for=ids.COMPARE_SELECT, className="viz-muted mb-0 me-2"),
        dcc.Dropdown(id=ids.COMPARE_SELECT, options=[], value="", clearable=True, searchable=True,
                     placeholder="No comparison", className="viz-dropdown viz-run-select"),
        dcc.Store(id=ids.COMPARE_SEEN, data=None),
    ], className="d-flex align-items-center", title="A second run: the LoRA panel fits both runs in one map, "
                                                     "coloured by run, and the quality charts show both")


def controls(interval_s: float) -> dbc.Card:
    return dbc.Card(dbc.CardBody(html.Div([
        dbc.Button("Refresh Now", id=ids.REFRESH_BUTTON, className="viz-button-accent me-2", n_clicks=0),
        dbc.Button(PAUSE_LABEL, id=ids.PAUSE_BUTTON, color="secondary", className="me-2", n_clicks=0),
        dbc.Button("Clear All Data", id=ids.CLEAR_BUTTON, color="danger", outline=True, className="me-2",
                   n_clicks=0, title=CLEAR_TITLE),
        dbc.Button("Delete Run Data", id=ids.DELETE_RUN_BUTTON, color="danger", className="me-4", n_clicks=0,
                   title=DELETE_TITLE),
        html.Div([
            dbc.Label("Update Interval", html_for=ids.INTERVAL_SELECT, className="viz-muted mb-0 me-2"),
            dbc.Select(id=ids.INTERVAL_SELECT, options=interval_options(interval_s),
                       value=_format_seconds(interval_s), size="sm", className="viz-select"),
        ], className="d-flex align-items-center"),
        run_select(),
        compare_select(),
        dcc.ConfirmDialog(id=ids.CLEAR_CONFIRM, message=CLEAR_MESSAGE),
        dcc.ConfirmDialog(id=ids.DELETE_RUN_CONFIRM, message=""),
        dcc.Store(id=ids.DELETE_RUN_TARGET, data=None),
        dcc.Store(id=ids.UPDATES_HIDDEN, data=False),
        html.Span(id=ids.DELETE_RUN_MESSAGE, className="viz-muted small"),
        staleness_line(),
        embed_status(),
    ], className="d-flex align-items-center flex-wrap gap-2")), className="viz-card mb-3")


PANEL_NAMES = {"latent": "Latent", "lora": "LoRA", "prompt": "Prompt"}


def colour_select(space: str) -> html.Div:
    options = [{"label": label, "value": value} for value, label in COLOUR_CHOICES.items()]
    return html.Div([
        dbc.Label(f"{PANEL_NAMES[space]} colour", html_for=ids.COLOUR_SELECTS[space],
                  className="viz-muted mb-0 me-2"),
        dbc.Select(id=ids.COLOUR_SELECTS[space], options=options, value=DEFAULT_COLOUR_BY[space], size="sm",
                   className="viz-select"),
    ], className="d-flex align-items-center")


def view_controls() -> dbc.Card:
    return dbc.Card(dbc.CardBody(html.Div([
        *[colour_select(space) for space in STAT_LABELS],
        html.Div([
            dbc.Label("LoRA layers", html_for=ids.LAYER_FILTER, className="viz-muted mb-0 me-2"),
            dcc.Dropdown(id=ids.LAYER_FILTER, options=[], value=[], multi=True, placeholder="All layers",
                         className="viz-dropdown viz-layer-filter"),
        ], className="d-flex align-items-center"),
        html.Div([
            dbc.Label("Tag", html_for=ids.TAG_SELECT, className="viz-muted mb-0 me-2"),
            dcc.Dropdown(id=ids.TAG_SELECT, options=[], value=None, placeholder="Most common tag",
                         className="viz-dropdown viz-tag-select"),
        ], className="d-flex align-items-center", title="Colour by \"Prompt tag\": points whose prompt has this tag "
                                                         "stand apart from the rest (latent and LoRA points: "
                                                         "any of the clip's prompt texts)"),
        dbc.Checklist(id=ids.TRAJECTORY_TOGGLE, options=[{"label": "Trajectories of selected clips", "value": 1}],
                      value=[1], switch=True, className="viz-muted"),
        dbc.Button("Clear Selection", id=ids.CLEAR_SELECTION_BUTTON, color="secondary", outline=True, size="sm",
                   n_clicks=0),
    ], className="d-flex align-items-center flex-wrap gap-3")), className="viz-card mb-3")


def stat_box(space: str) -> dbc.Col:
    return dbc.Col(dbc.Card(dbc.CardBody([
        html.Div(STAT_LABELS[space], className="viz-stat-label",
                 **({"id": ids.STAT_LABEL_PROMPT} if space == "prompt" else {})),
        html.Div("0 samples", id=ids.STAT_IDS[space], className="viz-stat-value"),
    ]), className="viz-card viz-stat h-100"), md=4, className="mb-3")


def stat_boxes() -> dbc.Row:
    return dbc.Row([stat_box(space) for space in STAT_LABELS])


def graph() -> dbc.Card:
    return dbc.Card(dbc.CardBody(dcc.Graph(
        id=ids.GRAPH, figure=empty_figure(),
        config={"displaylogo": False, "responsive": True, "scrollZoom": True},
        style={"height": "540px"},
    ), className="p-0"), className="viz-card viz-graph-card mb-3")


def scrubber() -> dbc.Card:
    return dbc.Card(dbc.CardBody([
        html.Div([
            dbc.Button("▶ Play", id=ids.PLAY_BUTTON, color="secondary", size="sm", className="me-3", n_clicks=0),
            html.Div("Live", id=ids.SCRUBBER_LABEL, className="viz-muted"),
        ], className="d-flex align-items-center mb-2"),
        dcc.Slider(id=ids.SCRUBBER, min=0, max=0, step=1, value=0, marks={0: "Live"}, updatemode="mouseup",
                   allow_direct_input=False, className="viz-scrubber"),
    ]), className="viz-card mb-3")


def details_and_quality() -> dbc.Row:
    return dbc.Row([
        dbc.Col(dbc.Card(dbc.CardBody([
            html.Div("Selected clips", className="viz-stat-label mb-2"),
            html.Div(id=ids.DETAILS),
        ]), className="viz-card h-100"), lg=7, className="mb-3"),
        dbc.Col(dbc.Card(dbc.CardBody([
            html.Div("How far to trust the maps", className="viz-stat-label mb-1"),
            dcc.Graph(id=ids.QUALITY_GRAPH, figure=quality_figure(None), config={"displayModeBar": False},
                      style={"height": "220px"}),
        ]), className="viz-card h-100"), lg=5, className="mb-3"),
        dbc.Col(health_card(), lg=12, className="mb-3"),
    ])


def health_card() -> dbc.Card:
    return dbc.Card(dbc.CardBody([
        html.Div("Is the adapter learning (figures from the original space)", className="viz-stat-label mb-1"),
        dcc.Graph(id=ids.HEALTH_GRAPH, figure=health_figure(None), config={"displayModeBar": False},
                  style={"height": "240px"}),
    ]), className="viz-card")


def adapter_card() -> dbc.Card:
    return dbc.Card(dbc.CardBody([
        html.Div("Adapter update size", className="viz-stat-label mb-1",
                 title="How far the adapter moved each LoRA layer's frozen weight: ||scale * B A|| / ||W||"),
        dcc.Graph(id=ids.ADAPTER_GRAPH, figure=adapter_figure(None), config={"displayModeBar": False},
                  style={"height": "260px"}),
    ]), className="viz-card mb-3")


def exports() -> dbc.Card:
    return dbc.Card(dbc.CardBody(html.Div([
        html.Div("Export", className="viz-stat-label me-2"),
        *[dbc.Button(EXPORT_LABELS[fmt], id=button, color="secondary", outline=True, size="sm", n_clicks=0)
          for fmt, button in ids.EXPORT_BUTTONS.items()],
        dcc.Loading(html.Div(id=ids.EXPORT_MESSAGE, className="viz-muted"), type="dot"),
        dcc.Download(id=ids.EXPORT_DOWNLOAD),
    ], className="d-flex align-items-center flex-wrap gap-2")), className="viz-card mb-3")


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
     "Each point is a text prompt as the (frozen) text encoder sees it. ACE-Step shuffles a clip's tags "
     "and picks among its captions on every visit, so a clip has several prompt points (the newest "
     "few texts); they share the clip and are selected together. Similar prompts cluster; well "
     "separated prompt clusters make it easier for the adapter to tell styles apart."),
    ("Colours",
     "By default latent and prompt points are coloured by training step (dark points are early, bright "
     "points are late; structure should grow over time) and LoRA points by layer. Each panel's colour "
     "select switches it to loss, timestep, layer, prompt tag or the clip. With prompt tag, pick a tag "
     "(a genre, an instrument) in the Tag list: points whose prompt has it stand apart from the rest; a "
     "latent or LoRA point has it when any of its clip's prompt texts does."),
    ("Small data sets",
     "PaCMAP needs about ten points. A space with fewer (from 3) is laid out by PCA instead, and its "
     "panel title says so, e.g. \"PCA (5 points)\"; PaCMAP takes over once the space has grown."),
    ("Selection and trajectories",
     "Click a point, or use the box or lasso tool, to pick clips: the same clips light up in all three "
     "panels and the card below lists them. In the LoRA panel a line joins each picked clip's points in "
     "step order: its path through the adapter's output space."),
    ("Step scrubber",
     "The collector keeps the recent maps. Drag the slider, or press Play, to see all three panels as "
     "they were at a training step; the last position is Live."),
    ("Adapter update size",
     "How far the adapter has moved each LoRA layer's frozen weight, ||scale * B A|| / ||W||, every "
     "adapter_every steps: the median over layers with the smallest-to-largest band, and the largest layers "
     "as lines. It starts at 0 and should grow; flat at 0 means the adapter is not learning."),
    ("Quality",
     "Neighbour overlap is the share of each point's nearest neighbours that stay its neighbours on "
     "the map: near 1 the map is faithful, low values mean distances on the map mislead. LoRA drift is "
     "how far the layer outputs moved from the first map, relative to their size."),
    ("Health",
     "Measured in the original space, not on the map. Effective rank: how many directions the points "
     "spread in; a steady fall in the LoRA panel's space means collapse. CKA to first: how alike the LoRA "
     "outputs are to the first frame's (1: unchanged for long means the adapter does nothing; a fast fall "
     "towards 0 means outputs rewritten). Tag silhouette: above 0 the clips with the tag stand apart."),
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
        dcc.Store(id=ids.VERSION_STORE, data=NO_VERSION),
        dcc.Store(id=ids.STATUS_STORE, data=status(WAITING)),
        dcc.Store(id=ids.STALENESS_STORE, data=NO_STALENESS),
        dcc.Store(id=ids.HISTORY_STORE, data=None),
        dcc.Store(id=ids.SELECTION_STORE, data=[]),
        dcc.Store(id=ids.SCRUB_STEP_STORE, data=None),
        dcc.Store(id=ids.ADAPTER_SEEN, data=None),
        dcc.Store(id=ids.COMPARE_RUN, data=None),
        dcc.Interval(id=ids.CLOCK, interval=1000, n_intervals=0),
        dcc.Interval(id=ids.PLAY_INTERVAL, interval=900, n_intervals=0, disabled=True),
    ])


def page(interval_s: float) -> dbc.Container:
    return dbc.Container([
        location(),
        header(),
        controls(interval_s),
        stat_boxes(),
        view_controls(),
        graph(),
        scrubber(),
        details_and_quality(),
        adapter_card(),
        exports(),
        guide(),
        stores_and_timer(interval_s),
    ], fluid=True, id=ids.ROOT, className="acestep-viz py-3")
