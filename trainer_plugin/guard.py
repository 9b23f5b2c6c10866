"""Misconfiguration must not stop training: warn once and go on without the monitor, unless strict.

A monitor that cannot start (a bad setting, a module path that does not exist, an endpoint that is
not a ZeroMQ address) costs the user a plot, not a training run. ``ACESTEP_VIZ_STRICT=1`` (the
trainer setting ``strict``) turns that into an error, for setups that would rather fail early.
Every integration (the Lightning callback, ``attach``, other trainers) goes through ``start_or_warn``.
"""
from __future__ import annotations

import logging
import os
from typing import Callable, TypeVar

from acestep_viz.trainer_plugin.settings import STRICT

from acestep_viz.settings import SettingError

log = logging.getLogger("acestep_viz")

# what a wrong setting, a module path that is not there or a model of another shape raises
MISCONFIGURATION = (ValueError, TypeError, LookupError, AttributeError, SettingError)

T = TypeVar("T")


def strict_from_env(explicit: bool | None = None) -> bool:
    """``explicit`` if given, else $ACESTEP_VIZ_STRICT (an unreadable value counts as strict: it was meant)."""
    if explicit is not None:
        return bool(explicit)
    raw = os.environ.get(STRICT.env, "").strip()
    if not raw:
        return False
    try:
        return bool(STRICT.parse(raw))
    except ValueError:
        return True


def start_or_warn(start: Callable[[], T], what: str, strict: bool | None = None) -> T | None:
    """``start()``'s result; if it raises a misconfiguration error, log one warning naming ``what`` and
    return None (the caller goes on without the monitor), or re-raise when strict."""
    try:
        return start()
    except MISCONFIGURATION as exc:
        if strict_from_env(strict):
            raise
        log.warning("acestep_viz: %s is misconfigured, so training goes on without the embedding monitor: %s "
                    "(set %s=1 to make this an error)", what, exc, STRICT.env)
        return None
