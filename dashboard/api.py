"""The HTTP JSON API on the dashboard's server, for pages such as ACETrainer's tab and for scripts.

Routes, under the dashboard's ``--url-prefix`` and behind its ``--token`` when one is set:
``GET api/status``, ``GET api/runs``, ``POST api/clear`` and ``POST api/refit`` (JSON body
``{"run": R or null, "space": S or null}``), ``GET api/export?format=F&run=R`` (the file itself) and
``DELETE api/runs/<run>``. Replies are JSON; errors are ``{"ok": false, "error": ...}`` with 400 (bad
input), 404 (no such run), 415 (a body that is not JSON) or 503 (the collector does not answer).
``GET`` replies may be read by pages of the same host on another port (ACETrainer's tab on 7870 asks
``api/status``): CORS lets exactly that origin in, never other hosts, and never with credentials.
"""
from __future__ import annotations

import io
from typing import Any, Callable
from urllib.parse import urlsplit

import dash
from acestep_viz.dashboard.client import CollectorClient, CollectorError, CollectorRequestError, CollectorUnavailable
from acestep_viz.dashboard.export_callbacks import export_download, safe_name, snapshot_html
from flask import Response, jsonify, request, send_file

from acestep_viz.wire import SPACES, run_name_problem

EXPORT_FORMATS = ("npz", "tensorboard", "html", "gif")
STATUS_OF_REASON = {"unknown_run": 404, "bad_request": 400}


class BadRequest(ValueError):
    """Input the API refuses before asking the collector; ``status`` is the HTTP code."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def error_reply(message: str, status: int) -> tuple[Response, int]:
    return jsonify({"ok": False, "error": message}), status


def target_from_body(body: Any) -> dict:
    """``{"run": R or null, "space": S or null}`` checked: the run and space a clear or refit applies to."""
    if not isinstance(body, dict):
        raise BadRequest('the body must be a JSON object such as {"run": null, "space": null}')
    unknown = sorted(set(body) - {"run", "space"})
    if unknown:
        raise BadRequest(f"unknown field(s) {', '.join(unknown)}: the body takes run and space")
    run, space = body.get("run"), body.get("space")
    if run is not None and run_name_problem(run):
        raise BadRequest(f"run {run!r}: {run_name_problem(run)}")
    if space is not None and space not in SPACES:
        raise BadRequest(f"space must be one of {', '.join(SPACES)} or null, got {space!r}")
    return {"run": run, "space": space}


def export_format(args: dict) -> str:
    fmt = args.get("format")
    if fmt not in EXPORT_FORMATS:
        raise BadRequest(f"format must be one of {', '.join(EXPORT_FORMATS)}, got {fmt!r}")
    return fmt


def register_api(app: dash.Dash, client: CollectorClient) -> None:
    """Add the API routes to the Dash app's Flask server, under its URL prefix."""
    prefix = app.config.url_base_pathname
    server = app.server

    def route(path: str, method: str, handler: Callable[..., Any]) -> None:
        def view(**kwargs):
            try:
                return handler(**kwargs)
            except BadRequest as exc:
                return error_reply(str(exc), exc.status)
            except CollectorUnavailable as exc:
                return error_reply(str(exc), 503)
            except CollectorRequestError as exc:
                return error_reply(str(exc), STATUS_OF_REASON.get(exc.reason, 400))
            except CollectorError as exc:
                return error_reply(str(exc), 502)

        server.add_url_rule(f"{prefix}api/{path}", endpoint=f"acestep_viz_api_{method}_{path}", view_func=view,
                            methods=[method])

    def json_body() -> Any:
        body = request.get_json(silent=True)
        if body is None and not request.is_json:
            raise BadRequest("send the body as JSON (Content-Type: application/json)", 415)
        if body is None:
            raise BadRequest("the body is not valid JSON")
        return body

    def control(op: str) -> Callable[[], Response]:
        def handler():
            return jsonify(client.request({"op": op, **target_from_body(json_body())}))
        return handler

    def delete_run(run: str):
        problem = run_name_problem(run)
        if problem:
            raise BadRequest(f"run {run!r}: {problem}")
        return jsonify(client.delete(run))

    def adapter(run: str):
        problem = run_name_problem(run)
        if problem:
            raise BadRequest(f"run {run!r}: {problem}")
        return jsonify(client.adapter(run))

    @server.after_request
    def same_host_reads(response: Response) -> Response:
        if request.method == "GET" and request.path.startswith(f"{prefix}api/"):
            origin = request.headers.get("Origin")
            if origin and same_host(origin, request.host):
                response.headers["Access-Control-Allow-Origin"] = origin
                response.headers.add("Vary", "Origin")
        return response

    route("status", "GET", lambda: jsonify(client.stats()))
    route("runs", "GET", lambda: jsonify({"ok": True, "runs": client.runs()}))
    route("clear", "POST", control("clear"))
    route("refit", "POST", control("refit"))
    route("export", "GET", lambda: export(client, export_format(request.args), request.args.get("run") or None))
    route("runs/<path:run>", "DELETE", delete_run)
    route("adapter/<path:run>", "GET", adapter)


def same_host(origin: str, host: str) -> bool:
    """True when the page at ``origin`` is served by the machine the request reached (any port)."""
    return bool(urlsplit(origin).hostname) and urlsplit(origin).hostname == urlsplit(f"//{host}").hostname


def export(client: CollectorClient, fmt: str, run: str | None) -> Response:
    """The export as a download: HTML built here from the snapshot, the rest written by the collector."""
    if fmt == "html":
        snapshot = client.request({"op": "snapshot", "run": run, "since": None})
        if not snapshot.get("run"):
            raise BadRequest("the collector has no run to export yet", 404)
        return Response(snapshot_html(snapshot), mimetype="text/html", headers={
            "Content-Disposition": f'attachment; filename="{safe_name(snapshot["run"])}.html"'})
    reply = client.request({"op": "export", "run": run, "format": fmt})
    download = export_download(reply, fmt)
    if download is None:
        return error_reply(f"the collector wrote the export on its own machine, at {reply.get('path')}: "
                           "fetch it from there", 409)
    filename, content = download
    return send_file(io.BytesIO(content), as_attachment=True, download_name=filename)
