"""Forward hooks that capture pooled activations of exactly one training forward per step.

Capture is armed for one training step (``arm`` / ``step``). ``attach`` registers the hooks once
(``register_forward_hook(..., with_kwargs=True)``) and they stay in their modules until ``close``;
each hook body is gated:
- nothing outside an armed step, nothing while an evaluation method (``plot_step``) runs;
- nothing inside the autograd engine: with non-reentrant gradient checkpointing, hooks inside
  a checkpointed block fire a second time during backward (recompute);
- the lora space only while gradients are enabled (evaluation forwards run under no_grad,
  while the frozen DCAE and text encoder run under no_grad even in training).

Hook bodies only keep a reference to the output (no torch call); when the forward ends (``disarm``,
before backward, or ``flush``) the step's outputs are pooled back to back on their device (one
reduction each: sums, with the division left to numpy where frames are built) and a non-blocking
copy to the host starts. ``flush`` hands the step to the publisher (trainer_plugin/publisher.py) as
a deferred record: its sender thread waits for the copies, divides the sums and builds the frames,
so the training thread never waits for the device. Metadata tensors are copied at ``note``: the
loop may reuse them before the step's batch is sent.
With ``frozen_once`` (the default) a frozen module's firing whose rows were all sent already
is dropped before any tensor work. A latent row is sent once per clip; a prompt row once per
(clip, prompt text): ACE-Step's dataset shuffles a clip's tags and picks among its recaptions on
every visit, so one clip has many prompt texts, each its own point.
Spaces a preset reads from the batch instead of a module (ACE-Step 1.5's precomputed latents and
condition) are taken at ``arm`` and pooled with the hooks' firings.
The step's timesteps are read by a forward pre-hook where the real trainers pass them: the
``timestep=`` keyword of v1's transformer call (``run_step`` keeps them in a local), the argument of
1.5's ``time_embed(timestep)``.
No exception escapes a hook or a public method. A misconfigured ``attach`` warns and returns a
disabled tap (trainer_plugin/guard.py), or raises when strict.
"""
from __future__ import annotations

import functools
import logging
import os
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, NamedTuple, Sequence

import numpy as np
import torch
from acestep_viz.trainer_plugin.adapter_size import AdapterProbe
from acestep_viz.trainer_plugin.autostart import start_sidecar
from acestep_viz.trainer_plugin.guard import start_or_warn
from acestep_viz.trainer_plugin.pooling import pool_sum
from acestep_viz.trainer_plugin.presets import PRESET_MODELS, Binding, select_bindings, space_specs, timestep_module
from acestep_viz.trainer_plugin.publisher import ErrorLog, Publisher
from acestep_viz.trainer_plugin.settings import ADAPTER_EVERY
from acestep_viz.trainer_plugin.step_record import CaptureRows, StepRecord, row_id
from torch import nn

from acestep_viz.settings import zmq_endpoint
from acestep_viz.wire import DEFAULT_INGEST, FROZEN_SPACES, MAX_NAME_CHARS, MAX_PATH_CHARS, run_name_problem

log = logging.getLogger("acestep_viz")

PROMPT_CHARS = 200
OUTPUT_KEYS = ("last_hidden_state", "sample")  # transformers ModelOutput / diffusers BaseOutput

_graph_task_id = getattr(torch._C, "_current_graph_task_id", lambda: -1)  # -1: not inside backward


def attach(model: nn.Module, preset: str | None = "acestep", spaces: Mapping[str, Any] | None = None,
           endpoint: str = DEFAULT_INGEST, run: str | None = None, every_n_steps: int = 1,
           lora_output: str = "output", lora_layers: Iterable[str] | None = None, all_ranks: bool = False,
           rank: int | None = None, publisher: Any = None, frozen_once: bool = True, warn_after_steps: int = 20,
           eval_methods: Iterable[str] = (), publisher_options: Mapping[str, Any] | None = None,
           autostart: bool = False, strict: bool | None = None, adapter_every: int = ADAPTER_EVERY.default) -> "Tap":
    """Hook ``model`` and return a ``Tap``. If a setting or module path is wrong, log one warning and return
    a disabled tap (training goes on without the monitor); with ``strict`` (default: $ACESTEP_VIZ_STRICT)
    raise ValueError instead.

    spaces: {"latent"|"lora"|"prompt": [module paths or globs]}, replacing the preset's entries.
    lora_output: "output" (the LoRA layer's output), "delta" (the adapter's own contribution,
    lora_B output x scaling) or "both" (layers named "<path>" and "<path>:delta").
    eval_methods: names of methods on ``model`` during which nothing is captured.
    preset "acestep15" (ACE-Step 1.5): ``model`` is the training module, the generation model or its
    decoder, before or after ``fabric.setup``; latent and prompt (condition) rows come from the batch
    given to ``step``, the timesteps from a forward pre-hook on the DiT's ``time_embed``.
    autostart: on the publishing rank, start the sidecar (``acestep-viz up``) when no collector answers
    (trainer_plugin/autostart.py); a failure is one warning, never an error.
    adapter_every: every N optimizer steps, send each LoRA layer's update size (trainer_plugin/adapter_size.py),
    measured when the step starts (after N optimizer updates); 0: never.
    """
    def start() -> Tap:
        return _attach(model, preset, spaces, endpoint, run, every_n_steps, lora_output, lora_layers, all_ranks,
                       rank, publisher, frozen_once, warn_after_steps, eval_methods, publisher_options, autostart,
                       adapter_every)

    tap = start_or_warn(start, f"attach({type(model).__name__})", strict)
    if tap is None:
        if publisher is not None:
            publisher.close()
        return Tap([], None, run="disabled", active=False)
    return tap


def _attach(model, preset, spaces, endpoint, run, every_n_steps, lora_output, lora_layers, all_ranks, rank,
            publisher, frozen_once, warn_after_steps, eval_methods, publisher_options, autostart,
            adapter_every=0) -> "Tap":
    if int(every_n_steps) < 1:
        raise ValueError(f"every_n_steps={every_n_steps!r}: must be at least 1")
    if int(warn_after_steps) < 1:
        raise ValueError(f"warn_after_steps={warn_after_steps!r}: must be at least 1")
    if int(adapter_every) < 0:
        raise ValueError(f"adapter_every={adapter_every!r}: must be 0 (off) or more")
    if publisher is None and zmq_endpoint(endpoint):
        raise ValueError(f"endpoint={endpoint!r}: {zmq_endpoint(endpoint)}")
    run = check_run_name(run or default_run_name())
    bindings = select_bindings(model, space_specs(model, preset, spaces, lora_layers), lora_output)
    rank = default_rank() if rank is None else int(rank)
    active = bool(all_ranks) or rank == 0
    if active and autostart:
        start_sidecar(endpoint)
    if active and publisher is None:
        options = {"model": PRESET_MODELS[preset]} if preset in PRESET_MODELS else {}
        publisher = Publisher(endpoint, frozen_spaces=FROZEN_SPACES, **{**options, **dict(publisher_options or {})})
    tap = Tap(bindings, publisher, run=run, rank=rank, active=active, every_n_steps=int(every_n_steps),
              frozen_once=frozen_once, warn_after_steps=int(warn_after_steps),
              timestep_module=timestep_module(model, preset))
    tap.suspend_during(model, eval_methods)
    if active and int(adapter_every) > 0:
        try:
            tap.adapter = AdapterProbe(model, run, int(adapter_every), publisher.publish, tap._errors, rank)
        except Exception as exc:  # the maps still work without the update size
            tap._errors.record("adapter_size", exc)
    return tap


def default_rank() -> int:
    """This process's rank: torch.distributed if initialised, else $RANK, else $LOCAL_RANK, else 0."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    for variable in ("RANK", "LOCAL_RANK"):
        value = os.environ.get(variable, "").strip()
        if value.isdigit():
            return int(value)
    return 0


def default_run_name() -> str:
    return time.strftime("run-%Y%m%d-%H%M%S")


def check_run_name(run: str) -> str:
    run = str(run)
    problem = run_name_problem(run)
    if problem:
        raise ValueError(f"run={run!r}: {problem}")
    return run


def _capture_rows(point: "_HookPoint", pooled: tuple) -> CaptureRows:
    """A pooled firing's rows: its sums, to be divided by the length (times LoRA scaling) or row by row by the
    mask weights' sums where frames are built. Runs on the publisher's sender thread; the step's device copies
    must be done."""
    _, first_key, rows, host, divisor, keep = pooled
    scale = 1.0 if point.lora_layer is None else float(point.lora_layer.scaling[point.adapter])
    sums = host.numpy()
    if sums.ndim != 2:
        sums = sums.reshape(rows, -1)
    if divisor.__class__ is float:
        return CaptureRows(point.space, point.label, first_key, sums, point.order, keep, scale / divisor)
    return CaptureRows(point.space, point.label, first_key, sums, point.order, keep, scale, divisor.numpy())


class _HookPoint(NamedTuple):
    """What pooling needs to know about a hooked module; a firing names it by its index."""

    space: str
    label: str
    order: int  # its place among the declared modules: the first declared size wins a space
    once: bool  # a frozen space sent once per clip (frozen_once)
    lora_layer: nn.Module | None  # for ":delta" bindings: the scaling lives on the LoRA layer
    adapter: str | None


# A hook firing is a plain tuple, (hook point index, output tensor, the call's kwargs, the output's
# _version when the hook fired: an in-place change later would spoil the capture). The hook only
# keeps these references; everything else waits until the forward is over (``disarm``). Torch
# calls in a hook are costly on CPU: the first small kernel after the model's own work takes about
# ten times as long as the next ones, and each hook would pay that.
# ``disarm`` pools each firing to a plain tuple too, (hook point index, first key, rows, host sums,
# divisor: a length or the mask weights on the host, keep: row offsets to send or None for all);
# its vectors are made on the publisher's sender thread, with the other steps of its batch:
# Python that runs once per step right after the model's work costs several times as much.


@dataclass
class _StepState:
    step: int
    micro_batch: int
    keys: list[str] | None
    prompts: list[str] | None
    audio: list[str | None] | None = None  # each clip's audio_path (1.5's metadata), sent with its latent row
    firings: list[tuple] = field(default_factory=list)  # outputs to pool once the forward is over
    pooled: list[tuple] = field(default_factory=list)  # the firings pooled, in firing order
    rows_fired: dict[str, int] = field(default_factory=dict)  # label -> rows its module produced this step
    copies: list = field(default_factory=list)  # CUDA events of device-to-host copies in flight
    loss: Any = None
    timesteps: Any = None
    sample_losses: Any = None
    timestep_input: Any = None  # the transformer's timestep= tensor, read by the pre-hook; copied at disarm


class Tap:
    """Installed hooks plus their gating; a context manager. Build it with ``attach``."""

    def __init__(self, bindings: Sequence[Binding], publisher: Any, run: str, rank: int = 0, active: bool = True,
                 every_n_steps: int = 1, frozen_once: bool = True, warn_after_steps: int = 20,
                 timestep_module: nn.Module | None = None):
        self.run = run
        self.rank = rank
        self.active = active
        self.every_n_steps = every_n_steps
        self.frozen_once = frozen_once
        self.warn_after_steps = warn_after_steps
        self.bindings = list(bindings)
        self._labels_by_space: dict[str, list[str]] = {}  # built once: flush reads it every step
        for binding in self.bindings:
            self._labels_by_space.setdefault(binding.space, []).append(binding.label)
        self._points = [_HookPoint(b.space, b.label, order, frozen_once and b.space in FROZEN_SPACES, b.lora_layer,
                                   b.adapter) for order, b in enumerate(self.bindings)]
        self._publisher = publisher if active else None
        self._errors = ErrorLog(log)
        self._state: _StepState | None = None
        self._armed = False
        self._suspend_depth = 0
        self._capturing = False  # armed and not suspended: the one flag a hook reads
        self._closed = False
        self._seen_frozen: set[tuple] = set()  # (space, label, clip) or, for prompts, (..., prompt text)
        self._silent_steps: Counter[str] = Counter()
        self._warned_silent: set[str] = set()
        self._captures = dict.fromkeys(self._labels_by_space, 0)  # hook firings captured, per space
        self._rows = dict.fromkeys(self._labels_by_space, 0)  # rows handed to the publisher, per space
        self._steps_seen = self._steps_captured = self._frames_queued = 0
        self._restores: list[Any] = []
        self.adapter: AdapterProbe | None = None  # the adapter's update size, every adapter_every steps
        self._adapter_step = -1  # the last step measured: micro-batches of one step share it
        # spaces read from the batch at ``arm``: (hook point index, batch key, mask key)
        self._batch_sources = [(i, b.batch.key, b.batch.mask_key) for i, b in enumerate(self.bindings)
                               if b.batch is not None]
        self._handles = [b.module.register_forward_hook(self._hook_for(i, b), with_kwargs=True)
                         for i, b in enumerate(self.bindings) if b.module is not None] if active else []
        if active and timestep_module is not None:
            self._handles.append(timestep_module.register_forward_pre_hook(self._timestep_hook, with_kwargs=True))
        if publisher is not None and not active:
            publisher.close()  # this rank does not publish

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def hooked(self) -> dict[str, list[str]]:
        """{space: [labels]} of the hook points."""
        return {space: list(labels) for space, labels in self._labels_by_space.items()}

    # ------------------------------------------------------------------ step lifecycle

    def step(self, global_step: int, batch_idx: int = 0, batch: Any = None, loss: Any = None) -> "_StepBlock":
        """Capture the training forward run inside the ``with`` block; publish when it exits.

        Call ``tap.note(loss=..., timesteps=..., sample_losses=...)`` inside to attach per-row
        metadata. If the block raises, the step's captures are discarded.
        """
        return _StepBlock(self, global_step, batch_idx, batch, loss)

    def arm(self, global_step: int, batch_idx: int = 0, batch: Any = None, *,
            keys: Sequence[Any] | None = None, prompts: Sequence[Any] | None = None) -> bool:
        """Start capturing for one training forward. Returns False for a skipped step."""
        if not self.active or self._closed:
            return False
        try:
            if self._state is not None:
                self.flush()  # the previous step was never flushed: publish what it captured
            self._measure_adapter(int(global_step))
            self._steps_seen += 1
            if int(global_step) % self.every_n_steps:
                return False
            batch_is_mapping = _is_mapping(batch)
            audio = None
            if batch_is_mapping:
                keys = keys if keys is not None else batch.get("keys")
                prompts = prompts if prompts is not None else batch.get("prompts")
                if (keys is None or prompts is None) and "metadata" in batch:
                    clip_keys, captions = metadata_columns(batch["metadata"])
                    keys = keys if keys is not None else clip_keys
                    prompts = prompts if prompts is not None else captions
                if "metadata" in batch:
                    audio = metadata_audio(batch["metadata"])
            self._state = _StepState(int(global_step), int(batch_idx), _strings(keys, MAX_NAME_CHARS),
                                     _strings(prompts, PROMPT_CHARS), audio)
            if self._batch_sources:
                self._take_from_batch(self._state, batch if batch_is_mapping else {})
            self._armed = True
            self._capturing = not self._suspend_depth
            return True
        except Exception as exc:
            self._errors.record("arm", exc)
            self._state, self._armed, self._capturing = None, False, False
            return False

    def _measure_adapter(self, step: int) -> None:
        """The adapter's update size when a due step starts: the weights after ``step`` optimizer updates."""
        probe = self.adapter
        if probe is not None and step != self._adapter_step and probe.due(step):
            self._adapter_step = step
            probe.measure(step)

    def _take_from_batch(self, state: _StepState, batch: Mapping[str, Any]) -> None:
        """Spaces read from the batch: their tensors become firings, pooled with the hooks' at ``disarm``.
        Read at step entry, before the step changes anything (ACE-Step 1.5's CFG dropout swaps the
        condition inside ``training_step``, on its own copy)."""
        for index, key, mask_key in self._batch_sources:
            x = batch.get(key)
            if not isinstance(x, torch.Tensor):
                self._errors.record(f"batch:{self._points[index].space}",
                                    KeyError(f"the batch has no tensor {key!r} (keys: {', '.join(map(str, batch))})"))
                continue
            mask = batch.get(mask_key) if mask_key else None
            state.firings.append((index, x, {"attention_mask": mask} if isinstance(mask, torch.Tensor) else None,
                                  x._version))

    def disarm(self) -> None:
        """Stop capturing and pool this step's firings, kept for ``flush`` (call before backward)."""
        self._armed = self._capturing = False
        state = self._state
        if state is not None and state.firings:
            self._pool_firings(state)
        if state is not None and state.timestep_input is not None:
            timesteps, state.timestep_input = state.timestep_input, None
            if state.timesteps is None:  # timesteps given to ``note`` win
                self.note(timesteps=timesteps)

    def _pool_firings(self, state: _StepState) -> None:
        firings, state.firings = state.firings, []
        points, fired, captured, pooled = self._points, state.rows_fired, self._captures, state.pooled
        for index, x, kwargs, version in firings:
            point = points[index]
            space, label = point.space, point.label
            try:
                first_key = fired.get(label, 0)
                fired[label] = first_key + (x.shape[0] if x.dim() > 1 else 1)
                if point.once and self._all_sent(point, state, first_key):
                    continue  # a clip already sent: no pooling, no copy
                captured[space] += 1
                if x._version != version:
                    raise RuntimeError(f"the output of {label} was changed in place later in the forward; "
                                       "its rows are skipped (hook a module whose output is not modified)")
                sums, divisor = pool_sum(x, _sequence_mask(kwargs, x) if kwargs else None)
                host, event = to_host(sums)
                if event is not None:
                    state.copies.append(event)
                if divisor.__class__ is not float:  # mask weights, divided by where frames are built
                    divisor, event = to_host(divisor)
                    if event is not None:
                        state.copies.append(event)
                pooled.append((index, first_key, fired[label] - first_key, host, divisor, None))
            except Exception as exc:
                self._errors.record(f"capture:{space}", exc)

    def note(self, loss: Any = None, timesteps: Any = None, sample_losses: Any = None) -> None:
        """Attach the step's loss, per-row timesteps and per-row losses (tensors are fine). The timesteps
        default to the ``timestep=`` the preset's transformer got; per-row losses exist only if given here."""
        state = self._state
        if state is None:
            return
        try:
            state.loss = _host_values(loss) if loss is not None else state.loss
            state.timesteps = _host_values(timesteps) if timesteps is not None else state.timesteps
            state.sample_losses = _host_values(sample_losses) if sample_losses is not None else state.sample_losses
            state.copies += [values[1] for values in (state.loss, state.timesteps, state.sample_losses)
                             if values is not None and values[1] is not None]
        except Exception as exc:
            self._errors.record("note", exc)

    def flush(self, loss: Any = None, timesteps: Any = None, sample_losses: Any = None) -> int:
        """Disarm and hand this step's captures to the publisher as one deferred record.

        Waiting for device copies and building frames happen on the publisher's sender thread. Returns how
        many frames the record will make (0: none, or refused)."""
        if loss is not None or timesteps is not None or sample_losses is not None:
            self.note(loss, timesteps, sample_losses)
        self.disarm()
        state, self._state = self._state, None
        if state is None or self._publisher is None:
            return 0
        try:
            self._steps_captured += 1
            self._warn_if_silent(state)
            rows, marked = self._mark_frozen(state)
            pending = _PendingStep(self, state, sum(1 for n in rows.values() if n), time.time())
            if not pending.frames:
                return 0
            if not self._publisher.publish(pending):
                self._seen_frozen.difference_update(marked)  # refused: those clips are still to be sent
                return 0
            self._frames_queued += pending.frames
            counted = self._rows
            for space, n in rows.items():
                counted[space] += n
            return pending.frames
        except Exception as exc:
            self._errors.record("flush", exc)
            return 0

    def _mark_frozen(self, state: _StepState) -> tuple[dict[str, int], list[tuple[str, str, str]]]:
        """Rows to send per space, and the frozen rows marked sent. With frozen_once, a frozen space's rows
        whose clip was sent already are left out (``keep``) and the new ones marked sent, so that later
        firings for those clips return at once in the hook."""
        rows, marked, kept, points = dict.fromkeys(self._labels_by_space, 0), [], [], self._points
        for pooled in state.pooled:
            point = points[pooled[0]]
            if not point.once:
                rows[point.space] += pooled[2]
                kept.append(pooled)
                continue
            keep = []
            for offset in range(pooled[2]):
                seen = _frozen_key(point, state, pooled[1] + offset)
                if seen not in self._seen_frozen:
                    self._seen_frozen.add(seen)
                    marked.append(seen)
                    keep.append(offset)
            if keep:
                kept.append((*pooled[:5], tuple(keep)))
                rows[point.space] += len(keep)
        state.pooled = kept
        return rows, marked

    def discard(self) -> None:
        """Drop this step's captures without publishing."""
        self._state, self._armed, self._capturing = None, False, False

    # ------------------------------------------------------------------ evaluation forwards

    @contextmanager
    def suspended(self) -> Iterator[None]:
        """Capture nothing inside this block, even in an armed step."""
        self._suspend_depth += 1
        self._capturing = False
        try:
            yield
        finally:
            self._suspend_depth -= 1
            self._capturing = self._armed and not self._suspend_depth

    def suspend_during(self, owner: Any, names: Iterable[str]) -> list[str]:
        """Wrap ``owner.<name>()`` methods so nothing is captured while they run; ``close`` restores them."""
        wrapped = []
        for name in names:
            original = getattr(owner, name, None)
            if not callable(original):
                continue
            had_own = name in vars(owner)
            owned = vars(owner).get(name)
            setattr(owner, name, _without_capture(self, original))
            self._restores.append(functools.partial(_restore_attr, owner, name, had_own, owned))
            wrapped.append(name)
        return wrapped

    # ------------------------------------------------------------------ teardown and stats

    def close(self) -> None:
        """Remove every hook, restore wrapped methods, close the publisher. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self.discard()
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        while self._restores:
            try:
                self._restores.pop()()
            except Exception as exc:
                self._errors.record("restore", exc)
        if self._publisher is not None:
            try:
                self._publisher.close()
            except Exception as exc:
                self._errors.record("publisher_close", exc)

    def __enter__(self) -> "Tap":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def stats(self) -> dict:
        """Counters; ``captures`` counts hook firings captured, the armed step's included (before a frozen
        clip sent already is left out, which happens when the forward ends)."""
        published = self._publisher.stats() if self._publisher is not None else {}
        errors = Counter(self._errors.as_dict())
        captures = Counter(self._captures)
        state = self._state
        if state is not None:  # the armed step's firings, not pooled yet
            captures.update(self._points[firing[0]].space for firing in list(state.firings))
        errors.update(published.get("errors", {}))
        return {
            "run": self.run,
            "rank": self.rank,
            "active": self.active,
            "steps_seen": self._steps_seen,
            "steps_captured": self._steps_captured,
            "frames_queued": self._frames_queued + (self.adapter.queued if self.adapter is not None else 0),
            "frames_sent": published.get("sent", 0),
            "frames_dropped": published.get("dropped", 0),
            "frames_resent": published.get("resent", 0),
            "queue_depth": published.get("queue_depth", 0),
            "frames_held": published.get("held", 0),
            "errors": dict(errors),
            "captures": {space: n for space, n in captures.items() if n},
            "rows_queued": {space: n for space, n in self._rows.items() if n},
        }

    # ------------------------------------------------------------------ hot path

    def _hook_for(self, index: int, binding: Binding):
        space = binding.space
        needs_grad = space == "lora"

        def hook(module, args, kwargs, output):
            if not self._capturing or (needs_grad and not torch.is_grad_enabled()) or _graph_task_id() != -1:
                return  # not armed, suspended, an evaluation forward, or a checkpoint recompute inside backward
            try:
                x = output if type(output) is torch.Tensor else output_tensor(output)
                self._state.firings.append((index, x, kwargs, x._version))
            except Exception as exc:
                self._errors.record(f"capture:{space}", exc)

        return hook

    def _timestep_hook(self, module, args, kwargs):
        """Forward pre-hook on the module that receives the step's timesteps (presets.timestep_module): keep the
        training forward's ``timestep=`` keyword (v1's transformer), else its one-dimensional first argument
        (1.5's ``time_embed(timestep)``)."""
        if not self._capturing or not torch.is_grad_enabled() or _graph_task_id() != -1:
            return None  # not armed, an evaluation forward (plot_step), or a recompute inside backward
        timestep = kwargs.get("timestep") if kwargs else None
        if timestep is None and args and isinstance(args[0], torch.Tensor) and args[0].ndim == 1:
            timestep = args[0]
        if isinstance(timestep, torch.Tensor) and self._state is not None and self._state.timestep_input is None:
            self._state.timestep_input = timestep  # the first call of the step is the training forward
        return None

    def _all_sent(self, point: _HookPoint, state: _StepState, first_key: int) -> bool:
        """True when the rows a frozen module's firing would add were all sent already (frozen_once)."""
        fired = state.rows_fired[point.label]
        return all(_frozen_key(point, state, key) in self._seen_frozen for key in range(first_key, fired))

    def _warn_if_silent(self, state: _StepState) -> None:
        if len(state.rows_fired) == len(self._points):  # every module fired: no space is silent
            if self._silent_steps:
                self._silent_steps.clear()
            return
        for space, labels in self._labels_by_space.items():
            if any(label in state.rows_fired for label in labels):  # fired, even if frozen_once skipped it
                self._silent_steps.pop(space, None)
                continue
            self._silent_steps[space] += 1
            if self._silent_steps[space] >= self.warn_after_steps and space not in self._warned_silent:
                self._warned_silent.add(space)
                log.warning("acestep_viz: the %s space captured nothing in %d training steps; hooked modules: %s. "
                            "A hook fires only when the module itself is called (module(...)) during the "
                            "training forward; check the module paths.", space, self._silent_steps[space],
                            ", ".join(labels))


class _StepBlock:
    """``Tap.step``'s block: a plain class, as a generator-based context manager costs several times
    as much, on every step."""

    __slots__ = ("tap", "where", "loss")

    def __init__(self, tap: Tap, global_step: int, batch_idx: int, batch: Any, loss: Any):
        self.tap, self.where, self.loss = tap, (global_step, batch_idx, batch), loss

    def __enter__(self) -> Tap:
        self.tap.arm(*self.where)
        return self.tap

    def __exit__(self, exc_type, exc, traceback) -> bool:
        if exc_type is not None:
            self.tap.discard()
        else:
            self.tap.flush(loss=self.loss)
        return False


class _PendingStep:
    """A flushed step on its way to the publisher. Calling it waits for device copies and returns the
    ``StepRecord``; ``ready`` says whether that would wait;
    ``frames`` is how many frames the record makes."""

    def __init__(self, tap: Tap, state: _StepState, frames: int, sent_at: float):
        self.tap, self.state, self.frames, self.sent_at = tap, state, frames, sent_at

    def ready(self) -> bool:
        """True when no device copy is still in flight: calling it will not wait."""
        copies = self.state.copies
        return not copies or all(event.query() for event in copies)

    def __call__(self) -> StepRecord:
        tap, state = self.tap, self.state
        _wait(state)
        points = tap._points
        captures = [_capture_rows(points[pooled[0]], pooled) for pooled in state.pooled]
        loss, timesteps, sample_losses = (_resolve(v) for v in (state.loss, state.timesteps, state.sample_losses))
        return StepRecord(run=tap.run, rank=tap.rank, step=state.step, micro_batch=state.micro_batch,
                          keys=state.keys, prompts=state.prompts, captures=captures, loss=loss,
                          timesteps=timesteps, sample_losses=sample_losses, sent_at=self.sent_at, audio=state.audio)


def _frozen_key(point: _HookPoint, state: _StepState, key_index: int) -> tuple:
    """What a frozen row is sent once for: its clip, and for the prompt space its prompt text too."""
    clip = row_id(state.keys, state.step, state.micro_batch, key_index)
    if point.space == "prompt" and state.prompts:
        return point.space, point.label, clip, state.prompts[key_index % len(state.prompts)]
    return point.space, point.label, clip


def _wait(state: _StepState) -> None:
    """Wait for the step's device-to-host copies (none on CPU)."""
    for event in state.copies:
        event.synchronize()


# ---------------------------------------------------------------------------- helpers

def output_tensor(output: Any) -> torch.Tensor:
    """The tensor a module returned: itself, a ModelOutput's last_hidden_state / sample, or a tuple's first."""
    if isinstance(output, torch.Tensor):
        return output
    mapping = _is_mapping(output)
    for key in OUTPUT_KEYS:
        value = output.get(key) if mapping else getattr(output, key, None)
        if isinstance(value, torch.Tensor):
            return value
    if isinstance(output, (tuple, list)) and output:
        return output_tensor(output[0])
    raise TypeError(f"no tensor found in a {type(output).__name__} output (expected a tensor, a tuple, "
                    f"or an object with {' or '.join(OUTPUT_KEYS)})")


def to_host(pooled: torch.Tensor) -> tuple[torch.Tensor, Any]:
    """Start copying to host memory. From CUDA: pinned, non-blocking, plus an event to wait on."""
    if pooled.is_cpu:  # checked first, and without building a torch.device: the CPU path is the cheap one
        return pooled, None  # pooling made a fresh tensor: the model cannot overwrite it
    if pooled.is_cuda:
        host = torch.empty(pooled.shape, dtype=pooled.dtype, pin_memory=True)
        host.copy_(pooled, non_blocking=True)
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(pooled.device))
        return host, event
    return pooled.to("cpu"), None


def _sequence_mask(kwargs: Mapping[str, Any] | None, x: torch.Tensor) -> torch.Tensor | None:
    mask = kwargs.get("attention_mask") if kwargs else None
    if isinstance(mask, torch.Tensor) and x.dim() == 3 and tuple(mask.shape) == tuple(x.shape[:2]):
        return mask
    return None


def _host_values(value: Any) -> tuple[torch.Tensor | np.ndarray, Any]:
    """Values for the step's metadata: a numpy copy of a CPU tensor (its owner may reuse it before the
    step is sent, with its batch), or a pinned host copy of a device tensor being made."""
    if isinstance(value, torch.Tensor):
        if not value.is_cpu:
            return to_host(value.detach().float().reshape(-1))
        value = value.detach() if value.requires_grad else value
        return (value.float().numpy() if value.dtype in _NO_NUMPY else value.numpy().copy()), None
    return np.array(value, dtype=np.float32), None


_NO_NUMPY = (torch.bfloat16,)  # dtypes numpy cannot view


def _resolve(host_values: tuple[torch.Tensor | np.ndarray, Any] | None) -> list[float] | None:
    """Host values as floats, with numpy (no torch kernel)."""
    if host_values is None:
        return None
    host, event = host_values
    if event is not None:
        event.synchronize()
    if isinstance(host, torch.Tensor):
        host = host.numpy()
    return host.reshape(-1).astype(float).tolist()


def _is_mapping(value: Any) -> bool:
    """isinstance(value, Mapping), with the fast check first: an ABC check costs microseconds on a cold
    path, and batches and model outputs are nearly always dicts (ModelOutput subclasses OrderedDict)."""
    return isinstance(value, dict) or isinstance(value, Mapping)


def metadata_columns(metadata: Any) -> tuple[list[str] | None, list[str] | None]:
    """(clip keys, prompts) from ACE-Step 1.5's per-clip ``metadata`` dicts: the key is ``filename``, else
    the base name of ``audio_path``; the prompt is ``caption``. None where a clip lacks one."""
    if not isinstance(metadata, (list, tuple)) or not all(_is_mapping(m) for m in metadata):
        return None, None
    keys = [m.get("filename") or os.path.basename(str(m.get("audio_path") or "")) for m in metadata]
    captions = [m.get("caption") for m in metadata]
    return (keys if all(keys) else None), (captions if all(isinstance(c, str) for c in captions) else None)


def metadata_audio(metadata: Any) -> list[str | None] | None:
    """Each clip's ``audio_path`` from ACE-Step 1.5's per-clip ``metadata`` dicts (None where a clip has
    none, or a path longer than the wire allows); None when no clip has one."""
    if not isinstance(metadata, (list, tuple)):
        return None
    paths = [m.get("audio_path") if _is_mapping(m) else None for m in metadata]
    paths = [p if isinstance(p, str) and 0 < len(p) <= MAX_PATH_CHARS else None for p in paths]
    return paths if any(paths) else None


def _strings(values: Any, limit: int) -> list[str] | None:
    if values is None:
        return None
    if isinstance(values, torch.Tensor):
        values = values.tolist()
    if isinstance(values, (str, bytes)):
        values = [values]
    return [str(v)[:limit] for v in values]


def _without_capture(tap: Tap, method):
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with tap.suspended():
            return method(*args, **kwargs)
    return wrapper


def _restore_attr(owner: Any, name: str, had_own: bool, owned: Any) -> None:
    if had_own:
        setattr(owner, name, owned)
    else:
        delattr(owner, name)
