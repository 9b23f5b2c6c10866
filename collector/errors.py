"""Failures of the collector's background jobs: counted, the first one logged, the job goes on."""
from __future__ import annotations

import logging


class CountedErrors:
    """How often one background job failed; only its first failure is logged."""

    def __init__(self, logger: logging.Logger):
        self.count = 0
        self._logger = logger

    def record(self, what: str, exc: BaseException) -> None:
        self.count += 1
        if self.count == 1:
            self._logger.error("%s (further errors are only counted): %s: %s", what, type(exc).__name__, exc)
