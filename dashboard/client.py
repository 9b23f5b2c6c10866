"""Talks to the collector's query endpoint (ZeroMQ REQ -> REP, one JSON object each way).

A fresh REQ socket per request: Flask serves callbacks on several threads and ZeroMQ
sockets must not be shared between threads, and a REQ socket that missed a reply is stuck
in the wrong state anyway. Every request has a timeout; nothing is pickled.
"""
from __future__ import annotations

import json
from typing import Any

import zmq

from acestep_viz.point_columns import TYPED, decode_points
from acestep_viz.settings import DEFAULT_QUERY


class CollectorError(Exception):
    """Base class for anything that went wrong talking to the collector."""


class CollectorUnavailable(CollectorError):
    """No reply in time, or a reply that is not a JSON object with an "ok" field."""


class CollectorRequestError(CollectorError):
    """The collector answered, but with ``"ok": false``; the message is its ``error``, ``reason`` its code
    (``unknown_run`` when the request named a run the collector does not have, else ``bad_request``)."""

    def __init__(self, message: str, reason: str = "bad_request"):
        super().__init__(message)
        self.reason = reason


class CollectorClient:
    """Request/reply client for one collector. Holds configuration only, no connection."""

    def __init__(self, endpoint: str = DEFAULT_QUERY, timeout_ms: int = 1500, curve_dir: str | None = None):
        self.endpoint = endpoint
        self.timeout_ms = int(timeout_ms)
        self.curve_dir = curve_dir  # CurveZMQ client keys for a collector started with --curve-dir

    def __repr__(self) -> str:
        return f"CollectorClient({self.endpoint!r}, timeout_ms={self.timeout_ms})"

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        """Send one request, return the reply object; raise a ``CollectorError`` subclass."""
        raw = self._round_trip(json.dumps(message).encode("utf-8"))
        reply = _parse_reply(raw, self.endpoint)
        if not reply["ok"]:
            raise CollectorRequestError(
                f"collector at {self.endpoint} refused {message.get('op')!r}: "
                f"{reply.get('error', 'no error message')}", str(reply.get("reason") or "bad_request"))
        return reply

    def _round_trip(self, payload: bytes) -> bytes:
        sock = zmq.Context.instance().socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, self.timeout_ms)
        sock.setsockopt(zmq.SNDTIMEO, self.timeout_ms)
        try:
            if self.curve_dir:
                from acestep_viz.security import make_client

                make_client(sock, self.curve_dir)
            sock.connect(self.endpoint)
            sock.send(payload)
            return sock.recv()
        except zmq.Again:
            raise CollectorUnavailable(
                f"no reply from the collector at {self.endpoint} within {self.timeout_ms} ms "
                "(is `acestep-viz collector` running?)") from None
        except zmq.ZMQError as exc:
            raise CollectorUnavailable(f"cannot reach the collector at {self.endpoint}: {exc}") from None
        finally:
            sock.close()

    # -- the query API ---------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        return self.request({"op": "stats"})

    def runs(self) -> list[dict[str, Any]]:
        return list(self.request({"op": "runs"}).get("runs") or [])

    def snapshot(self, run: str | None = None, since: int | None = None) -> dict[str, Any]:
        """Projected points of ``run`` (None: the most recently active run) newer than ``since``."""
        reply = self.request({"op": "snapshot", "run": run, "since": since, "encoding": TYPED})
        for entry in (reply.get("spaces") or {}).values():
            if isinstance(entry, dict) and isinstance(entry.get("points"), dict):
                entry["points"] = decode_points(entry["points"])
        return reply

    def clear(self, run: str | None = None, space: str | None = None) -> dict[str, Any]:
        """Empty the live view (None run: every run, None space: every space); the store keeps the frames."""
        return self.request({"op": "clear", "run": run, "space": space})

    def delete(self, run: str) -> dict[str, Any]:
        """Delete one run's stored data for good."""
        return self.request({"op": "delete", "run": run})

    def pause(self) -> dict[str, Any]:
        return self.request({"op": "pause"})

    def resume(self) -> dict[str, Any]:
        return self.request({"op": "resume"})

    def refit(self, run: str | None = None, space: str | None = None) -> dict[str, Any]:
        return self.request({"op": "refit", "run": run, "space": space})

    def history(self, run: str | None, space: str, version: int | None = None) -> dict[str, Any]:
        """Frame summaries of one space, or one frame's points when ``version`` is given."""
        reply = self.request({"op": "history", "run": run, "space": space, "version": version, "encoding": TYPED})
        frame = reply.get("frame")
        if isinstance(frame, dict) and isinstance(frame.get("points"), dict):
            frame["points"] = decode_points(frame["points"])
        return reply

    def adapter(self, run: str) -> dict[str, Any]:
        """The run's adapter update sizes: {"layers": {layer: {"step": [...], "value": [...]}}}."""
        return self.request({"op": "adapter", "run": run})

    def compare(self, runs: list[str], space: str = "lora", since: int | None = None) -> dict[str, Any]:
        """The latest joint map of two runs (points carry their ``run``); asking keeps it being refitted."""
        reply = self.request({"op": "compare", "runs": list(runs), "space": space, "since": since, "encoding": TYPED})
        if isinstance(reply.get("points"), dict):
            reply["points"] = decode_points(reply["points"])
        return reply

    def export(self, run: str | None, fmt: str) -> dict[str, Any]:
        """Ask the collector to write the run as ``fmt`` under its store; the reply lists the files."""
        return self.request({"op": "export", "run": run, "format": fmt})


def _parse_reply(raw: bytes, endpoint: str) -> dict[str, Any]:
    """The reply object; numeric point columns stay typed here (the ops that carry points decode them)."""
    try:
        reply = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CollectorUnavailable(f"the collector at {endpoint} sent a reply that is not JSON: {exc}") from None
    if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
        raise CollectorUnavailable(
            f"the collector at {endpoint} sent a reply without a boolean \"ok\" field")
    return reply
