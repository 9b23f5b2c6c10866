"""Playing a selected clip: the audio roots' file listing, the clips' reported paths, and the route.

``GET <prefix>audio?run=R&clip=K`` answers with the clip's audio file (range requests honoured, so the
player can seek), or 404 and the reason as text; behind ``--token`` like every route. The browser names
a run and a clip key, never a path: the file comes from ``audio.resolve`` (dashboard/audio.py), which
serves only audio files under the ``--audio-root`` folders.
The reported path of a clip is the one its details card was drawn with, else the collector's snapshot
is asked. Each root's audio files are listed once (at most ``MAX_INDEXED_FILES``) and listed again when
a clip is not found and the listing is older than ``REFRESH_S``, so files added later are found.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from typing import Callable, Sequence
from urllib.parse import urlencode

import dash
from acestep_viz.dashboard.audio import Found, audio_type, index_names, merge_indexes, resolve
from acestep_viz.dashboard.client import CollectorClient, CollectorError
from flask import Response, request, send_file

from acestep_viz.wire import MAX_NAME_CHARS, run_name_problem

log = logging.getLogger(__name__)

MAX_INDEXED_FILES = 20_000  # audio files listed per root
REFRESH_S = 15.0
MAX_REMEMBERED = 4096  # (run, clip) -> reported path, from the cards drawn


class AudioLibrary:
    """The audio roots, their listings and the clips' reported paths; thread-safe."""

    def __init__(self, roots: Sequence[str] = (), client: CollectorClient | None = None, url_prefix: str = "/",
                 max_files: int = MAX_INDEXED_FILES, refresh_s: float = REFRESH_S,
                 clock: Callable[[], float] = time.monotonic):
        self.roots = tuple(roots)
        self.client, self.url_prefix = client, url_prefix
        self.max_files, self.refresh_s, self.clock = max_files, refresh_s, clock
        self._listings: dict[str, tuple[float, dict[str, list[str]]]] = {}
        self._reported: OrderedDict[tuple[str, str], str | None] = OrderedDict()
        self._lock = threading.Lock()
        self._warned_full: set[str] = set()
        self._merged: dict[str, list[str]] | None = None

    def url(self, run: str, key: str) -> str:
        return f"{self.url_prefix}audio?{urlencode({'run': run, 'clip': key})}"

    def find(self, run: str, key: str, reported: str | None) -> Found:
        """The file to play for a clip, remembering the path its trainer reported for the route."""
        self._remember(run, key, reported)
        found = resolve(key, reported, self.roots, self._index(rescan=False))
        if found.path is None and self.roots and self._stale():
            found = resolve(key, reported, self.roots, self._index(rescan=True))
        return found

    def reported_path(self, run: str, key: str) -> str | None:
        """The path the trainer reported for a clip: remembered from a drawn card, else the collector's."""
        with self._lock:
            if (run, key) in self._reported:
                return self._reported[(run, key)]
        reported = self._ask_collector(run, key)
        if reported is not None:  # none yet may mean not projected yet: ask again next time
            self._remember(run, key, reported)
        return reported

    def _ask_collector(self, run: str, key: str) -> str | None:
        if self.client is None:
            return None
        try:
            points = ((self.client.snapshot(run, None).get("spaces") or {}).get("latent") or {}).get("points") or {}
        except CollectorError as exc:
            log.info("no reported audio path for %s/%s: %s", run, key, exc)
            return None
        for clip, path in zip(points.get("id") or [], points.get("audio") or []):
            if clip == key and path:
                return str(path)
        return None

    def _remember(self, run: str, key: str, reported: str | None) -> None:
        with self._lock:
            self._reported[(run, key)] = reported
            self._reported.move_to_end((run, key))
            while len(self._reported) > MAX_REMEMBERED:
                self._reported.popitem(last=False)

    def _stale(self) -> bool:
        now = self.clock()
        with self._lock:
            return any(now - listed_at >= self.refresh_s for listed_at, _ in self._listings.values())

    def _index(self, rescan: bool) -> dict[str, list[str]]:
        """The roots' merged listing, made again only when a root was listed again."""
        changed = False
        for root in self.roots:
            with self._lock:
                listing = self._listings.get(root)
            if listing is None or (rescan and self.clock() - listing[0] >= self.refresh_s):
                listing = (self.clock(), index_names(self._list(root)))
                changed = True
                with self._lock:
                    self._listings[root] = listing
        with self._lock:
            if changed or self._merged is None:
                self._merged = merge_indexes([self._listings[root][1] for root in self.roots])
            return self._merged

    def _list(self, root: str) -> list[str]:
        """Up to ``max_files`` audio files under ``root``, symbolic links to folders not followed."""
        found: list[str] = []
        for folder, dirs, files in os.walk(root):
            dirs.sort()
            found.extend(os.path.join(folder, name) for name in sorted(files) if audio_type(name))
            if len(found) >= self.max_files:
                if root not in self._warned_full:
                    self._warned_full.add(root)
                    log.warning("%s holds more than %d audio files: only the first are found by clip key",
                                root, self.max_files)
                return found[:self.max_files]
        return found


def register_audio(app: dash.Dash, library: AudioLibrary) -> None:
    """Add ``GET <prefix>audio?run=R&clip=K`` to the Dash app's Flask server."""
    prefix = app.config.url_base_pathname

    def serve_clip():
        run, key = request.args.get("run", ""), request.args.get("clip", "")
        problem = run_name_problem(run)
        if problem or not key or len(key) > MAX_NAME_CHARS:
            return Response(f"name a run and a clip: audio?run=RUN&clip=KEY ({problem or 'no clip key'})\n",
                            status=400, mimetype="text/plain")
        found = library.find(run, key, library.reported_path(run, key))
        if found.path is None:
            return Response(found.reason + "\n", status=404, mimetype="text/plain")
        response = send_file(found.path, mimetype=audio_type(found.path), conditional=True, max_age=0)
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    app.server.add_url_rule(f"{prefix}audio", endpoint="acestep_viz_audio", view_func=serve_clip, methods=["GET"])
