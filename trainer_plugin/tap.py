"""Forward hooks that capture pooled activations of exactly one training forward per step.

Capture is armed for one training step (``arm`` / ``step``) and gated in every hook body:
- nothing outside an armed step, nothing while an evaluation method (``plot_step``) runs;
- nothing inside the autograd engine: with non-reentrant gradient checkpointing, hooks inside
  a checkpointed block fire a second time during backward (recompute);
- the lora space only while gradients are enabled (evaluation forwards run under no_grad,
  while the frozen DCAE and text encoder run under no_grad even in training).

Hook bodies pool on the device and start a non-blocking copy to the host; frames are built on
the publisher's thread (``_FrameBuilder``), so the training thread never waits for the device.
With ``frozen_once`` (the default) a frozen module's firing whose clips were all sent already
returns before any tensor work.
No exception escapes a hook or a public method except configuration errors from ``attach``.
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
from torch import nn

from collector.protocol import MAX_NAME_CHARS, Frame
from trainer_plugin.pooling import pool_float32, to_wire
from trainer_plugin.presets import FROZEN_SPACES, Binding, select_bindings, space_specs
from trainer_plugin.publisher import ErrorLog, Publisher

log = logging.getLogger("acestep_viz")

DEFAULT_ENDPOINT = "tcp://127.0.0.1:5557"
PROMPT_CHARS = 200
OUTPUT_KEYS = ("last_hidden_state", "sample")  # transformers ModelOutput / diffusers BaseOutput

_graph_task_id = getattr(torch._C, "_current_graph_task_id", None)


def attach(model: nn.Module, preset: str | None = "acestep", spaces: Mapping[str, Any] | None = None,
           endpoint: str = DEFAULT_ENDPOINT, run: str | None = None, every_n_steps: int = 1,
           lora_output: str = "output", lora_layers: Iterable[str] | None = None, all_ranks: bool = False,
           rank: int | None = None, publisher: Any = None, frozen_once: bool = True, warn_after_steps: int = 20,
           eval_methods: Iterable[str] = (), publisher_options: Mapping[str, Any] | None = None) -> "Tap":
    """Hook ``model`` and return a ``Tap``. Raises ValueError if a setting or module path is wrong.

    spaces: {"latent"|"lora"|"prompt": [module paths or globs]}, replacing the preset's entries.
    lora_output: "output" (the LoRA layer's output), "delta" (the adapter's own contribution,
    lora_B output x scaling) or "both" (layers named "<path>" and "<path>:delta").
    eval_methods: names of methods on ``model`` during which nothing is captured.
    """
    if int(every_n_steps) < 1:
        raise ValueError(f"every_n_steps={every_n_steps!r}: must be at least 1")
    if int(warn_after_steps) < 1:
        raise ValueError(f"warn_after_steps={warn_after_steps!r}: must be at least 1")
    run = check_run_name(run or default_run_name())
    bindings = select_bindings(model, space_specs(model, preset, spaces, lora_layers), lora_output)
    rank = default_rank() if rank is None else int(rank)
    active = bool(all_ranks) or rank == 0
    if active and publisher is None:
        publisher = Publisher(endpoint, frozen_spaces=FROZEN_SPACES, **dict(publisher_options or {}))
    tap = Tap(bindings, publisher, run=run, rank=rank, active=active, every_n_steps=int(every_n_steps),
              frozen_once=frozen_once, warn_after_steps=int(warn_after_steps))
    tap.suspend_during(model, eval_methods)
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
    if not run or len(run) > MAX_NAME_CHARS or "/" in run:
        raise ValueError(f"run={run!r}: must be 1 to {MAX_NAME_CHARS} characters without '/'")
    return run


class _Capture(NamedTuple):
    """One hook firing's pooled rows, in host memory (or being copied there from the GPU)."""

    label: str
    first_key: int  # its first row's index among the rows its module produced this step
    host: torch.Tensor  # (rows, dim) float32 on the host; valid once ``event`` completes
    event: Any = None  # torch.cuda.Event for a copy from the GPU, else None

    def pooled(self) -> np.ndarray:
        if self.event is not None:
            self.event.synchronize()
        return self.host.numpy()


@dataclass
class _StepState:
    step: int
    micro_batch: int
    keys: list[str] | None
    prompts: list[str] | None
    captures: dict[str, list[_Capture]] = field(default_factory=dict)  # space -> its captures, firing order
    rows_fired: dict[str, int] = field(default_factory=dict)  # label -> rows its module produced this step
    loss: Any = None
    timesteps: Any = None
    sample_losses: Any = None
    _resolved: tuple | None = field(default=None, init=False, repr=False)

    def resolved(self) -> tuple:
        """(loss, timesteps, sample_losses) as lists of floats or None; converted once, on the publisher thread,
        for all of the step's frames."""
        if self._resolved is None:
            self._resolved = tuple(_resolve(v) for v in (self.loss, self.timesteps, self.sample_losses))
        return self._resolved


class _Row(NamedTuple):
    source: int  # row index in the concatenation of the frame's captures
    key_index: int
    label: str


class Tap:
    """Installed hooks plus their gating; a context manager. Build it with ``attach``."""

    def __init__(self, bindings: Sequence[Binding], publisher: Any, run: str, rank: int = 0, active: bool = True,
                 every_n_steps: int = 1, frozen_once: bool = True, warn_after_steps: int = 20):
        self.run = run
        self.rank = rank
        self.active = active
        self.every_n_steps = every_n_steps
        self.frozen_once = frozen_once
        self.warn_after_steps = warn_after_steps
        self.bindings = list(bindings)
        self._binding_order = {b.label: i for i, b in enumerate(self.bindings)}
        self._publisher = publisher if active else None
        self._errors = ErrorLog(log)
        self._state: _StepState | None = None
        self._armed = False
        self._suspend_depth = 0
        self._closed = False
        self._seen_frozen: set[tuple[str, str, str]] = set()
        self._silent_steps: Counter[str] = Counter()
        self._warned_silent: set[str] = set()
        self._captures: Counter[str] = Counter()
        self._rows: Counter[str] = Counter()
        self._steps_seen = self._steps_captured = self._frames_queued = self._frames_refused = 0
        self._restores: list[Any] = []
        self._handles = [b.module.register_forward_hook(self._hook_for(b), with_kwargs=True)
                         for b in self.bindings] if active else []
        if publisher is not None and not active:
            publisher.close()  # this rank does not publish

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def hooked(self) -> dict[str, list[str]]:
        """{space: [labels]} of the hook points."""
        out: dict[str, list[str]] = {}
        for b in self.bindings:
            out.setdefault(b.space, []).append(b.label)
        return out

    # ------------------------------------------------------------------ step lifecycle

    @contextmanager
    def step(self, global_step: int, batch_idx: int = 0, batch: Any = None, loss: Any = None) -> Iterator["Tap"]:
        """Capture the training forward run inside the block; publish when it exits.

        Call ``tap.note(loss=..., timesteps=..., sample_losses=...)`` inside to attach per-row
        metadata. If the block raises, the step's captures are discarded.
        """
        self.arm(global_step, batch_idx, batch)
        try:
            yield self
        except BaseException:
            self.discard()
            raise
        self.flush(loss=loss)

    def arm(self, global_step: int, batch_idx: int = 0, batch: Any = None, *,
            keys: Sequence[Any] | None = None, prompts: Sequence[Any] | None = None) -> bool:
        """Start capturing for one training forward. Returns False for a skipped step."""
        if not self.active or self._closed:
            return False
        try:
            if self._state is not None:
                self.flush()  # the previous step was never flushed: publish what it captured
            self._steps_seen += 1
            if int(global_step) % self.every_n_steps:
                return False
            keys = keys if keys is not None else _batch_field(batch, "keys")
            prompts = prompts if prompts is not None else _batch_field(batch, "prompts")
            self._state = _StepState(int(global_step), int(batch_idx), _strings(keys, MAX_NAME_CHARS),
                                     _strings(prompts, PROMPT_CHARS))
            self._armed = True
            return True
        except Exception as exc:
            self._errors.record("arm", exc)
            self._state, self._armed = None, False
            return False

    def disarm(self) -> None:
        """Stop capturing but keep this step's captures for ``flush`` (call before backward)."""
        self._armed = False

    def note(self, loss: Any = None, timesteps: Any = None, sample_losses: Any = None) -> None:
        """Attach the step's loss, per-row timesteps and per-row losses (tensors are fine)."""
        state = self._state
        if state is None:
            return
        try:
            state.loss = _host_values(loss) if loss is not None else state.loss
            state.timesteps = _host_values(timesteps) if timesteps is not None else state.timesteps
            state.sample_losses = _host_values(sample_losses) if sample_losses is not None else state.sample_losses
        except Exception as exc:
            self._errors.record("note", exc)

    def flush(self, loss: Any = None, timesteps: Any = None, sample_losses: Any = None) -> int:
        """Disarm and hand this step's captures to the publisher, one deferred frame per space.

        Waiting for device copies, row planning and frame building run later on the publisher's
        thread. Returns how many deferred frames the publisher took."""
        self.note(loss, timesteps, sample_losses)
        state, self._state, self._armed = self._state, None, False
        self._count_captures(state)
        if state is None or self._publisher is None:
            return 0
        try:
            self._steps_captured += 1
            self._warn_if_silent(state)
            sent_at = time.time()
            return sum(bool(self._publisher.publish(_FrameBuilder(self, space, state, captures, sent_at)))
                       for space, captures in state.captures.items())
        except Exception as exc:
            self._errors.record("flush", exc)
            return 0

    def discard(self) -> None:
        """Drop this step's captures without publishing."""
        state, self._state, self._armed = self._state, None, False
        self._count_captures(state)

    def _count_captures(self, state: _StepState | None) -> None:
        for space, captures in state.captures.items() if state is not None else ():
            self._captures[space] += len(captures)

    # ------------------------------------------------------------------ evaluation forwards

    @contextmanager
    def suspended(self) -> Iterator[None]:
        """Capture nothing inside this block, even in an armed step."""
        self._suspend_depth += 1
        try:
            yield
        finally:
            self._suspend_depth -= 1

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
        """Counters; ``captures`` counts hook firings captured, the armed step's included."""
        published = self._publisher.stats() if self._publisher is not None else {}
        state = self._state
        live = state.captures if state is not None else {}
        errors = Counter(self._errors.as_dict())
        errors.update(published.get("errors", {}))
        return {
            "run": self.run,
            "rank": self.rank,
            "active": self.active,
            "steps_seen": self._steps_seen,
            "steps_captured": self._steps_captured,
            "frames_queued": self._frames_queued,
            "frames_sent": published.get("sent", 0),
            "frames_dropped": published.get("dropped", 0),
            "frames_resent": published.get("resent", 0),
            "queue_depth": published.get("queue_depth", 0),
            "frames_held": published.get("held", 0),
            "errors": dict(errors),
            "captures": dict(self._captures + Counter({space: len(c) for space, c in list(live.items())})),
            "rows_queued": dict(self._rows),
        }

    # ------------------------------------------------------------------ hot path

    def _hook_for(self, binding: Binding):
        space, label = binding.space, binding.label
        needs_grad = space == "lora"
        once = self.frozen_once and space in FROZEN_SPACES
        layer, adapter = binding.lora_layer, binding.adapter

        def hook(module, args, kwargs, output):
            if not self._armed or self._suspend_depth:
                return
            if needs_grad and not torch.is_grad_enabled():
                return
            if _graph_task_id is not None and _graph_task_id() != -1:
                return  # inside backward: a checkpoint recompute, not a new forward
            try:
                state = self._state
                x = output_tensor(output)
                fired = state.rows_fired
                first_key = fired.get(label, 0)
                fired[label] = first_key + (x.size(0) if x.dim() > 1 else 1)
                if once and self._all_sent(space, label, state, first_key):
                    return  # a clip already sent: no pooling, no copy
                scale = float(layer.scaling[adapter]) if layer is not None else 1.0
                host, event = to_host(pool_float32(x, _sequence_mask(kwargs, x), scale))
                capture = _Capture(label, first_key, host, event)
                captures = state.captures.get(space)
                if captures is None:
                    state.captures[space] = [capture]
                else:
                    captures.append(capture)
            except Exception as exc:
                self._errors.record(f"capture:{space}", exc)

        return hook

    # ------------------------------------------------------------------ building frames

    def _pooled(self, space: str, captures: list[_Capture]) -> list[tuple[_Capture, np.ndarray]]:
        """(capture, rows x dim float32) for each capture that pools to the space's size (publisher thread)."""
        pooled = []
        for capture in captures:
            try:
                pooled.append((capture, capture.pooled()))
            except Exception as exc:
                self._errors.record(f"pool:{space}", exc)
        if not pooled:
            return []
        first = min(pooled, key=lambda item: self._binding_order.get(item[0].label, 0))
        dim = first[1].shape[1]  # the first declared module's size wins, whatever fired first
        kept = [item for item in pooled if item[1].shape[1] == dim]
        if len(kept) < len(pooled):
            odd = sorted({c.label for c, vectors in pooled if vectors.shape[1] != dim})
            self._errors.record("dim_mismatch", ValueError(f"{space}: {', '.join(odd)} pool to a size other "
                                                           f"than {dim}; their rows are skipped"))
        return kept

    def _all_sent(self, space: str, label: str, state: _StepState, first_key: int) -> bool:
        """True when the rows a frozen module's firing would add were all sent already (frozen_once)."""
        fired = state.rows_fired[label]
        return all((space, label, _row_id(state, key)) in self._seen_frozen for key in range(first_key, fired))

    def _plan_rows(self, space: str, pooled: list[tuple[_Capture, np.ndarray]], state: _StepState) -> list[_Row]:
        """Row i of a module's firings in this step belongs to clip keys[i] (clips encoded one by one).

        Runs on the publisher thread; with frozen_once it marks the rows it plans as sent."""
        once = self.frozen_once and space in FROZEN_SPACES
        rows, source = [], 0
        for capture, vectors in pooled:
            for offset in range(vectors.shape[0]):
                key_index = capture.first_key + offset
                if once:
                    seen = (space, capture.label, _row_id(state, key_index))
                    if seen in self._seen_frozen:
                        source += 1
                        continue
                    self._seen_frozen.add(seen)
                rows.append(_Row(source, key_index, capture.label))
                source += 1
        return rows

    def _warn_if_silent(self, state: _StepState) -> None:
        for space, labels in self.hooked.items():
            if any(label in state.rows_fired for label in labels):  # fired, even if frozen_once skipped it
                self._silent_steps[space] = 0
                continue
            self._silent_steps[space] += 1
            if self._silent_steps[space] >= self.warn_after_steps and space not in self._warned_silent:
                self._warned_silent.add(space)
                log.warning("acestep_viz: the %s space captured nothing in %d training steps; hooked modules: %s. "
                            "A hook fires only when the module itself is called (module(...)) during the "
                            "training forward; check the module paths.", space, self._silent_steps[space],
                            ", ".join(labels))


class _FrameBuilder:
    """Runs on the publisher thread: waits for device copies, plans rows, builds the Frame."""

    def __init__(self, tap: Tap, space: str, state: _StepState, captures: list[_Capture], sent_at: float):
        self.tap, self.space, self.state, self.captures, self.sent_at = tap, space, state, captures, sent_at

    def __call__(self) -> Frame | None:
        tap, space, state = self.tap, self.space, self.state
        pooled = tap._pooled(space, self.captures)
        rows = tap._plan_rows(space, pooled, state)
        if not rows:
            return None  # every row was a frozen clip already sent
        vectors = pooled[0][1] if len(pooled) == 1 else np.concatenate([v for _, v in pooled], axis=0)
        frame = Frame(run=tap.run, space=space, step=state.step, vectors=to_wire(vectors[[r.source for r in rows]]),
                      ids=[_row_id(state, r.key_index) for r in rows], micro_batch=state.micro_batch,
                      rank=tap.rank, columns=self._columns(rows), sent_at=self.sent_at)
        tap._frames_queued += 1
        tap._rows[space] += len(rows)
        return frame

    def _columns(self, rows: list[_Row]) -> dict[str, list]:
        """Per-row metadata, one list per key: prompt, loss, timestep (LoRA) and layer."""
        state = self.state
        loss, timesteps, sample_losses = state.resolved()
        batch = len(state.keys) if state.keys else None
        indices = [row.key_index % batch if batch else row.key_index for row in rows]
        columns: dict[str, list] = {}
        if state.prompts:
            columns["prompt"] = _pick(state.prompts, indices)
        step_loss = loss[0] if loss is not None and len(loss) == 1 else None
        if sample_losses is not None and len(sample_losses) != 1:
            columns["loss"] = _pick(sample_losses, indices, step_loss)
        elif step_loss is not None:
            columns["loss"] = [step_loss] * len(indices)
        if self.space == "lora" and timesteps is not None:
            columns["timestep"] = _pick(timesteps, indices)
        if self.space == "lora" or len({row.label for row in rows}) > 1:
            columns["layer"] = [row.label for row in rows]
        return columns


def _pick(values: list, indices: list[int], default=None) -> list:
    """values[i] for each index, ``default`` past the end."""
    return [values[i] if i < len(values) else default for i in indices]


# ---------------------------------------------------------------------------- helpers

def output_tensor(output: Any) -> torch.Tensor:
    """The tensor a module returned: itself, a ModelOutput's last_hidden_state / sample, or a tuple's first."""
    if isinstance(output, torch.Tensor):
        return output
    for key in OUTPUT_KEYS:
        value = output.get(key) if isinstance(output, Mapping) else getattr(output, key, None)
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


def _host_values(value: Any) -> tuple[torch.Tensor, Any]:
    if isinstance(value, torch.Tensor):
        return to_host(value.detach().float().reshape(-1))
    return torch.as_tensor(value, dtype=torch.float32).reshape(-1), None


def _resolve(host_values: tuple[torch.Tensor, Any] | None) -> list[float] | None:
    if host_values is None:
        return None
    host, event = host_values
    if event is not None:
        event.synchronize()
    return host.numpy().astype(float).tolist()


def _batch_field(batch: Any, name: str) -> Any:
    return batch.get(name) if isinstance(batch, Mapping) else None


def _strings(values: Any, limit: int) -> list[str] | None:
    if values is None:
        return None
    if isinstance(values, torch.Tensor):
        values = values.tolist()
    if isinstance(values, (str, bytes)):
        values = [values]
    return [str(v)[:limit] for v in values]


def _row_id(state: _StepState, key_index: int) -> str:
    if state.keys:
        return state.keys[key_index % len(state.keys)]
    return f"step{state.step}-mb{state.micro_batch}-row{key_index}"


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
