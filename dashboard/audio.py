"""Which audio file, if any, the dashboard may play for a clip: pure rules, no Flask.

A clip's audio is served only from under the ``--audio-root`` folders. The trainer may report the
clip's path (ACE-Step 1.5's ``metadata["audio_path"]``); it is used only when its real path (symlinks
resolved) lies under a root's real path and it is an audio file. Otherwise a file is looked up by the
clip's key under the roots: ``<key>.<ext>`` at any depth (ACE-Step v1 datasets name a clip's audio
``<key>.mp3`` beside ``<key>_prompt.txt``), or a file named exactly ``<key>`` (1.5's keys are file
names). Paths never come from the browser: it names a run and a clip key, nothing else.
"""
from __future__ import annotations

import os
from typing import Iterable, Mapping, NamedTuple, Sequence

AUDIO_TYPES = {".wav": "audio/wav", ".flac": "audio/flac", ".mp3": "audio/mpeg", ".ogg": "audio/ogg",
               ".opus": "audio/ogg", ".m4a": "audio/mp4"}
NO_ROOTS = "no --audio-root set"


class Found(NamedTuple):
    """A servable file's real path, or None and the reason a user reads."""

    path: str | None
    reason: str = ""


def audio_type(path: str) -> str | None:
    """The audio mimetype of a file name, None for anything else."""
    return AUDIO_TYPES.get(os.path.splitext(path)[1].lower())


def real_roots(roots: Iterable[str]) -> tuple[str, ...]:
    return tuple(os.path.realpath(root) for root in roots)


def inside(path: str, roots: Sequence[str]) -> bool:
    """True when ``path``'s real path lies under one of ``roots`` (real paths already)."""
    real = os.path.realpath(path)
    return any(_under(real, root) for root in roots)


def _under(real: str, root: str) -> bool:
    try:
        return os.path.commonpath([real, root]) == root
    except ValueError:  # different drives on Windows
        return False


def servable(path: str, roots: Sequence[str]) -> str | None:
    """The real path of ``path`` if it may be served: an existing audio file under a root (real paths)."""
    real = os.path.realpath(path)
    if audio_type(real) and any(_under(real, root) for root in roots) and os.path.isfile(real):
        return real
    return None


def index_names(paths: Iterable[str]) -> dict[str, list[str]]:
    """{name: paths} of audio files, each under its file name and its name without the extension."""
    index: dict[str, list[str]] = {}
    for path in paths:
        if not audio_type(path):
            continue
        name = os.path.basename(path)
        for entry in dict.fromkeys((name, os.path.splitext(name)[0])):
            index.setdefault(entry, []).append(path)
    return index


def merge_indexes(indexes: Sequence[Mapping[str, Sequence[str]]]) -> dict[str, list[str]]:
    """One index of several roots' indexes, earlier roots first."""
    merged: dict[str, list[str]] = {}
    for index in indexes:
        for name, paths in index.items():
            merged.setdefault(name, []).extend(paths)
    return merged


def resolve(key: str, reported: str | None, roots: Sequence[str],
            index: Mapping[str, Sequence[str]]) -> Found:
    """The file to play for clip ``key`` of a run, whose trainer reported ``reported`` (or None).

    ``roots``: the audio roots as the user gave them; ``index``: ``index_names`` of the files under them.
    """
    if not roots:
        return Found(None, NO_ROOTS)
    real = real_roots(roots)
    outside = None
    if reported:
        for candidate in _reported_candidates(reported, roots):
            path = servable(candidate, real)
            if path:
                return Found(path)
            if not inside(candidate, real):
                outside = outside or f"{reported} is outside the audio roots"
    for candidate in index.get(key, ()) if _plain_name(key) else ():
        path = servable(candidate, real)
        if path:
            return Found(path)
    named = key if audio_type(key) else f"{key}.*"
    return Found(None, outside or f"no audio file named {named} under {', '.join(roots)}")


def _reported_candidates(reported: str, roots: Sequence[str]) -> list[str]:
    """An absolute path as it is; a relative one under each root."""
    if os.path.isabs(reported):
        return [reported]
    return [os.path.join(root, reported) for root in roots]


def _plain_name(key: str) -> bool:
    """A key that can name a file: no folder part, not "." or "..", no NUL."""
    return bool(key) and key not in (".", "..") and not any(c in key for c in "/\\\0")
