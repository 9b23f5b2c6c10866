"""Misconfiguration of the monitor in a training loop: one clear warning and training goes on,
unless ``ACESTEP_VIZ_STRICT`` asks for an error.

The few lines a user adds to a trainer must never stop a training run because the monitor is set up
wrongly (a bad endpoint, a model it does not recognise); with ``ACESTEP_VIZ_STRICT=1`` (for tests
and for checking a setup) the same mistakes raise.
"""
from __future__ import annotations

import logging
import os
from typing import Mapping

from acestep_viz.trainer_plugin.settings import STRICT

from acestep_viz.settings import SettingError, resolve

log = logging.getLogger("acestep_viz")


def is_strict(environ: Mapping[str, str] | None = None) -> bool:
    """True when ``ACESTEP_VIZ_STRICT`` is set to a true value. A value that is not a boolean counts as
    false, with a warning: this switch must not be what stops training."""
    try:
        return bool(resolve([STRICT], environ=os.environ if environ is None else environ)["strict"])
    except SettingError as exc:
        log.warning("acestep_viz: %s; not strict", exc)
        return False


def warn_unless_strict(what: str, exc: Exception, strict: bool | None = None) -> None:
    """Raise ``exc`` in strict mode (``strict``, else ``ACESTEP_VIZ_STRICT``); otherwise log one warning
    saying what failed and that training goes on."""
    if is_strict() if strict is None else strict:
        raise exc
    log.warning("acestep_viz: %s: %s. Training goes on without the embedding monitor (set %s=1 to make "
                "this an error).", what, exc, STRICT.env)
