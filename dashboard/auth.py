"""Optional token for the dashboard (``--token`` / ``ACESTEP_VIZ_TOKEN``).

When a token is set, every HTTP request must carry it: once as ``?token=...`` in the URL (the
reply then sets an HttpOnly cookie, so the page's own requests carry it from there on), or as an
``Authorization: Bearer ...`` header, or the cookie. Anything else gets 401. Comparisons are
constant-time. Without a token nothing changes (loopback-only is the default protection).
"""
from __future__ import annotations

import hmac

from flask import Response, g, request

COOKIE = "acestep_viz_token"


def _matches(supplied: str | None, token: str) -> bool:
    return bool(supplied) and hmac.compare_digest(supplied.encode(), token.encode())


def require_token(app, token: str | None) -> None:
    """Guard every route of the Dash ``app``'s Flask server with ``token`` (no-op when empty)."""
    if not token:
        return
    server = app.server

    @server.before_request
    def _check_token():
        header = request.headers.get("Authorization", "")
        bearer = header[7:].strip() if header[:7].lower() == "bearer " else None
        if _matches(request.cookies.get(COOKIE), token) or _matches(bearer, token):
            return None
        if _matches(request.args.get("token"), token):
            g.acestep_viz_set_cookie = True
            return None
        return Response("acestep-viz dashboard: a token is required; open the URL with ?token=TOKEN "
                        "or send 'Authorization: Bearer TOKEN'\n", status=401,
                        headers={"WWW-Authenticate": 'Bearer realm="acestep-viz"'}, mimetype="text/plain")

    @server.after_request
    def _remember_token(response):
        if g.pop("acestep_viz_set_cookie", False):
            response.set_cookie(COOKIE, token, httponly=True, samesite="Lax", secure=request.is_secure)
        return response
