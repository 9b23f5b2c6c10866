"""Applies the retention limits (collector/retention.py) to a running collector's store.

At start-up and then hourly, run folders whose log is older than ``retention_days`` are deleted
(never a run that received a live frame within that time); every few seconds, a log past
``retention_max_mb`` is compacted to the rows its run's buffers hold. Every change is made under
the collector's write lock, so ingest never appends to a log that is being rewritten or deleted.
"""
from __future__ import annotations

import itertools
import logging
import threading
import time

from acestep_viz.collector.errors import CountedErrors
from acestep_viz.collector.retention import DAY_S, MB, compacted_frames, compaction_due, expired_runs
from acestep_viz.collector.store import run_dir_name

from acestep_viz.wire import SPACES, encode, encode_adapter

log = logging.getLogger("acestep_viz.collector")
CHECK_EVERY_S = 5.0  # log sizes
EXPIRE_EVERY_S = 3600.0  # run ages


class StoreUpkeep:
    def __init__(self, state, store, maps, write_lock: threading.Lock, retention_days: float,
                 retention_max_mb: float):
        self.state, self.store, self.maps, self.write_lock = state, store, maps, write_lock
        self.retention_days, self.retention_max_mb = retention_days, retention_max_mb
        self.live: dict[str, float] = {}  # run -> when its last live frame arrived (ingest sets it)
        self.errors = CountedErrors(log)
        self._compacted: dict[str, int] = {}  # run -> log size right after its last compaction

    def run(self, stop: threading.Event) -> None:
        """The upkeep thread: compaction checks every CHECK_EVERY_S, age checks every EXPIRE_EVERY_S."""
        next_expiry = time.monotonic() + EXPIRE_EVERY_S
        while not stop.wait(CHECK_EVERY_S):
            self.compact_due()
            if time.monotonic() >= next_expiry:
                self.expire(time.time())
                next_expiry = time.monotonic() + EXPIRE_EVERY_S

    def expire(self, now: float) -> list[str]:
        """Delete the run folders past ``retention_days``; returns their names."""
        deleted = []
        with self.write_lock:
            cutoff = now - self.retention_days * DAY_S
            keep = {run_dir_name(run) for run, at in self.live.items() if at >= cutoff}
            runs = {run_dir_name(run): run for run in self.state.run_names(None)}
            for name in expired_runs(self.store.last_written(), now, self.retention_days, keep):
                if name in runs:
                    self.state.clear(runs[name], None)
                    self.maps.discard(runs[name], SPACES)
                try:
                    self.store.delete_run_dir(name)
                except OSError as exc:
                    self.errors.record(f"cannot delete the expired run folder {name}", exc)
                    continue
                deleted.append(name)
                log.info("deleted run %s from the store: its log was last written more than %g days ago",
                         name, self.retention_days)
        return deleted

    def compact_due(self) -> list[str]:
        """Compact every run whose log is past ``retention_max_mb``; returns those runs."""
        done = []
        for run in self.state.run_names(None):
            if compaction_due(self.store.log_size(run), self.retention_max_mb, self._compacted.get(run, 0)):
                if self.compact(run) is not None:
                    done.append(run)
        return done

    def compact(self, run: str) -> int | None:
        """Rewrite the run's log to the frames that rebuild its current buffers; returns the new size."""
        with self.write_lock:
            buffers = self.state.run_buffers(run)
            if buffers is None:
                return None
            before = self.store.log_size(run)
            try:
                records = itertools.chain((encode(frame) for frame in compacted_frames(run, buffers)),
                                          map(encode_adapter, self.state.adapter_messages(run)))
                after = self.store.rewrite(run, records)
            except (OSError, ValueError) as exc:
                self.errors.record(f"cannot compact the log of {run}", exc)
                return None
        self._compacted[run] = after
        log.info("compacted the log of run %s from %.1f MB to %.1f MB (the rows its buffers hold)",
                 run, before / MB, after / MB)
        if compaction_due(after, self.retention_max_mb):
            log.warning("run %s: its buffers alone take %.1f MB, more than --retention-max-mb %g",
                        run, after / MB, self.retention_max_mb)
        return after
