"""Export buttons: NPZ, TensorBoard projector files, a self-contained HTML page, an animated GIF.

NPZ, TensorBoard and GIF are written by the collector under its store (it decides where it
writes); when the dashboard runs on the same machine it hands the file to the browser as a
download, otherwise it says where the collector put it. The HTML page is the figure the user
is looking at, with Plotly embedded, so it opens offline.
"""
from __future__ import annotations

import io
import logging
import zipfile
from pathlib import Path
from typing import Any, Mapping

import dash
import plotly.io
from acestep_viz.dashboard import ids
from acestep_viz.dashboard.client import CollectorClient, CollectorError
from acestep_viz.dashboard.figures import EMPTY_TITLE
from dash import Input, Output, State, ctx, dcc, no_update
from dash.exceptions import PreventUpdate

log = logging.getLogger(__name__)

EXPORT_LABELS = {"npz": "NPZ", "tensorboard": "TensorBoard projector", "html": "HTML page", "gif": "Animation (GIF)"}


def safe_name(run: str | None) -> str:
    keep = "".join(c if c.isalnum() or c in "._-" else "_" for c in (run or "acestep-viz"))
    return keep.strip("._") or "acestep-viz"


def snapshot_html(snapshot: Mapping[str, Any]) -> str:
    """A collector snapshot's three maps as one HTML page that needs no network (plotly.js inlined)."""
    from acestep_viz.dashboard.figures import build_figure

    return plotly.io.to_html(build_figure(snapshot), include_plotlyjs=True, full_html=True)


def html_download(figure: Mapping[str, Any] | None, run: str | None) -> dict:
    """The shown figure as one HTML file that needs no network (plotly.js inlined)."""
    page = plotly.io.to_html(dict(figure or {}), include_plotlyjs=True, full_html=True, validate=False,
                             default_width="100%", default_height="560px")
    return dcc.send_string(page, f"{safe_name(run)}.html")


def zip_files(files: list[Path]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in files:
            archive.write(path, arcname=path.name)
    return buffer.getvalue()


def export_download(reply: Mapping[str, Any], fmt: str) -> tuple[str, bytes] | None:
    """(file name, content) of a collector's export reply when its files are on this machine (several go into
    one zip), else None: the collector wrote them on its own machine."""
    files = [Path(f) for f in reply.get("files") or []]
    if not files or not all(f.is_file() for f in files):
        return None
    name = safe_name(reply.get("run"))
    if len(files) == 1:
        return f"{name}{files[0].suffix}", files[0].read_bytes()
    return f"{name}-{fmt}.zip", zip_files(files)


def collector_download(client: CollectorClient, fmt: str, run: str | None) -> tuple[Any, str]:
    """(download or no_update, message) after asking the collector to export."""
    reply = client.export(run, fmt)
    where = f"The collector wrote {EXPORT_LABELS[fmt]} for run {reply.get('run')} to {reply.get('path')}"
    download = export_download(reply, fmt)
    if download is None:
        return no_update, where + " (on the collector's machine)."
    filename, content = download
    zipped = filename.endswith(".zip")  # several files
    return dcc.send_bytes(content, filename), where + ("; downloading as a zip." if zipped else "; downloading.")


def export_outputs(client: CollectorClient, fmt: str, run: str | None,
                   figure: Mapping[str, Any] | None) -> tuple[Any, str]:
    if fmt == "html":
        if not (figure or {}).get("data") or EMPTY_TITLE in str((figure or {}).get("layout", {}).get("annotations")):
            return no_update, "Nothing to export yet: wait for the first points."
        return html_download(figure, run), f"Downloading the maps as {safe_name(run)}.html."
    try:
        return collector_download(client, fmt, run)
    except CollectorError as exc:
        return no_update, f"Export failed: {exc}"


def register(app: dash.Dash, client: CollectorClient) -> None:
    @app.callback(Output(ids.EXPORT_DOWNLOAD, "data"), Output(ids.EXPORT_MESSAGE, "children"),
                  *[Input(button, "n_clicks") for button in ids.EXPORT_BUTTONS.values()],
                  State(ids.VERSION_STORE, "data"), State(ids.GRAPH, "figure"), prevent_initial_call=True)
    def export(*args):
        seen, figure = args[-2], args[-1]
        formats = {button: fmt for fmt, button in ids.EXPORT_BUTTONS.items()}
        fmt = formats.get(ctx.triggered_id)
        if fmt is None:
            raise PreventUpdate
        return export_outputs(client, fmt, (seen or {}).get("run"), figure)
