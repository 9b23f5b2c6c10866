"""Which modules to hook: the ACE-Step preset, and turning module paths or globs into hook points.

Hook points are module paths from ``named_modules()`` (TransformerLens style). A path that is
not a glob captures that module's output whatever its type. In the ``lora`` space a glob
selects peft LoRA layers by type (``BaseTunerLayer``), never their ``base_layer`` / ``lora_A``
children. ``{first}``, ``{mid}`` and ``{last}`` in a path index the module list just before them,
so ``transformers.transformer_blocks.{last}.attn.to_out.0`` works for any depth.

ACE-Step 1.5 (``acestep15``) trains from precomputed tensors: its latent and prompt (condition)
spaces are read from the batch, not hooked (``BatchSource``), and its LoRA layers sit in the DiT,
found by class name wherever Fabric, DDP, peft or torch.compile wrapping has put it.
"""
from __future__ import annotations

import difflib
import fnmatch
import logging
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Mapping

from acestep_viz.trainer_plugin.settings import LORA_OUTPUTS
from torch import nn

from acestep_viz.wire import SPACES

log = logging.getLogger("acestep_viz")

DELTA_SUFFIX = ":delta"

ACESTEP_LORA_ROOT = "transformers"
ACESTEP_DEFAULT_LORA_LAYERS = (
    "transformer_blocks.{first}.attn.to_out.0",
    "transformer_blocks.{mid}.attn.to_out.0",
    "transformer_blocks.{last}.attn.to_out.0",
)
ACESTEP = {
    # DCAE.encode() is a plain method, so hook the module it calls once per clip.
    "latent": ("dcae.dcae.encoder",),
    # Called with keyword arguments; the hook reads attention_mask from kwargs.
    "prompt": ("text_encoder_model",),
}
ACESTEP15_DIT_CLASS = "AceStepDiTModel"
ACESTEP15_DEFAULT_LORA_LAYERS = (
    "layers.{first}.self_attn.o_proj",
    "layers.{mid}.self_attn.o_proj",
    "layers.{last}.self_attn.o_proj",
)
ACESTEP15_TIMESTEP_MODULE = "time_embed"  # called as time_embed(timestep) in the DiT's forward
# ACE-Step's run_step keeps the step's timesteps in a local and passes them as transformers(timestep=...).
ACESTEP_TIMESTEP_ROOT = ACESTEP_LORA_ROOT
PRESETS = ("acestep", "acestep15")
PRESET_MODELS = {"acestep": "acestep", "acestep15": "acestep15"}  # the wire header's model name
_PLACEHOLDER = re.compile(r"\{(first|mid|last)\}")


@dataclass(frozen=True)
class BatchSource:
    """A space read from the training batch at step entry: ``batch[key]`` (B, T, D), pooled over the
    positions where ``batch[mask_key]`` (B, T) is non-zero."""

    key: str
    mask_key: str | None = None


ACESTEP15_BATCH = {
    "latent": BatchSource("target_latents", "attention_mask"),
    # the condition encoder's packed output (lyrics, timbre, caption), before the step's CFG dropout
    "prompt": BatchSource("encoder_hidden_states", "encoder_attention_mask"),
}


@dataclass(frozen=True)
class SpaceSpec:
    """What to hook for one space. ``lora_root``: paths may also be given relative to it;
    ``relative_labels``: rows are labelled by their path below ``lora_root``; ``batch``: read from the
    batch instead of hooked."""

    space: str
    patterns: tuple[str, ...]
    lora_root: str = ""
    relative_labels: bool = False
    batch: BatchSource | None = None


@dataclass(frozen=True)
class Binding:
    """One forward hook: the module to hook and the label its rows carry."""

    space: str
    label: str
    module: nn.Module
    lora_layer: nn.Module | None = None  # set for ":delta" bindings: scaling lives on the LoRA layer
    adapter: str | None = None
    batch: BatchSource | None = None  # set (and module None) for a space read from the batch


def space_specs(model: nn.Module, preset: str | None = "acestep",
                spaces: Mapping[str, Iterable[str] | str] | None = None,
                lora_layers: Iterable[str] | None = None) -> dict[str, SpaceSpec]:
    """The preset's spaces, with any space in ``spaces`` replacing the preset's entry."""
    if preset not in (None, *PRESETS):
        raise ValueError(f"unknown preset {preset!r}; use one of {', '.join(PRESETS)} or None with spaces=...")
    specs: dict[str, SpaceSpec] = {}
    if preset == "acestep":
        specs = {space: SpaceSpec(space, paths) for space, paths in ACESTEP.items()}
        layers = tuple(lora_layers or ()) or ACESTEP_DEFAULT_LORA_LAYERS
        specs["lora"] = SpaceSpec("lora", layers, ACESTEP_LORA_ROOT)
    elif preset == "acestep15":
        specs = {space: SpaceSpec(space, (), batch=source) for space, source in ACESTEP15_BATCH.items()}
        layers = tuple(lora_layers or ()) or ACESTEP15_DEFAULT_LORA_LAYERS
        specs["lora"] = SpaceSpec("lora", layers, find_dit(model)[0], relative_labels=True)
    for space, paths in (spaces or {}).items():
        if space not in SPACES:
            raise ValueError(f"unknown space {space!r}; spaces are {', '.join(SPACES)}")
        paths = (paths,) if isinstance(paths, str) else tuple(paths)
        preset_spec = specs.get(space, SpaceSpec(space, ()))
        specs[space] = SpaceSpec(space, paths, preset_spec.lora_root, preset_spec.relative_labels)
    if not specs:
        raise ValueError("nothing to capture: pass preset='acestep' or spaces={'latent'|'lora'|'prompt': [paths]}")
    return specs


def timestep_module(model: nn.Module, preset: str | None) -> nn.Module | None:
    """The module the step's timesteps are passed to (None: not known): v1's transformer, as its
    ``timestep=`` keyword; 1.5's DiT ``time_embed``, as its argument."""
    if preset == "acestep15":
        module = getattr(find_dit(model)[1], ACESTEP15_TIMESTEP_MODULE, None)
        return module if isinstance(module, nn.Module) else None
    if preset != "acestep":
        return None
    try:
        return model.get_submodule(ACESTEP_TIMESTEP_ROOT)
    except AttributeError:
        return None


def select_bindings(model: nn.Module, specs: Mapping[str, SpaceSpec], lora_output: str = "output") -> list[Binding]:
    """Resolve every space's paths to hook points; raise ValueError naming close matches if one is missing."""
    if lora_output not in LORA_OUTPUTS:
        raise ValueError(f"lora_output={lora_output!r}: must be one of {', '.join(LORA_OUTPUTS)}")
    modules = dict(model.named_modules())
    bindings: list[Binding] = []
    for spec in specs.values():
        if spec.batch is not None:
            bindings.append(Binding(spec.space, spec.batch.key, None, batch=spec.batch))
            continue
        found = _resolve_spec(model, modules, spec)
        if spec.relative_labels and spec.lora_root:
            found = [(_below(name, spec.lora_root), module) for name, module in found]
        if spec.space == "lora":
            found = _one_output_size(found)
            bindings += _lora_bindings(found, lora_output)
        else:
            bindings += [Binding(spec.space, name, module) for name, module in found]
    return bindings


def find_dit(model: nn.Module) -> tuple[str, nn.Module]:
    """(path, module) of ACE-Step 1.5's DiT inside ``model``, found by class name: its path depends on
    how Fabric (``_forward_module``), DDP (``module``), peft (``base_model.model``) or torch.compile
    (``_orig_mod``) wrapped the decoder. Raises ValueError if there is none."""
    for name, module in model.named_modules():
        if any(cls.__name__ == ACESTEP15_DIT_CLASS for cls in type(module).__mro__):
            return name, module
    raise ValueError(f"preset 'acestep15': no {ACESTEP15_DIT_CLASS} inside this {type(model).__name__}; pass "
                     "the training module (whose .model is the AceStepConditionGenerationModel), the generation "
                     "model or its decoder")


def _below(name: str, root: str) -> str:
    return name[len(root) + 1:] if root and name.startswith(root + ".") else name


def _resolve_spec(model: nn.Module, modules: dict[str, nn.Module], spec: SpaceSpec) -> list[tuple[str, nn.Module]]:
    found: dict[str, nn.Module] = {}
    for pattern in spec.patterns:
        pattern = _expand_placeholders(model, pattern, spec.lora_root)
        names = _glob(modules, pattern, spec) if _is_glob(pattern) else _exact(modules, pattern, spec.lora_root)
        if not names:
            raise ValueError(_missing_message(spec.space, pattern, modules))
        for name in names:
            found.setdefault(name, modules[name])
    return list(found.items())


def _is_glob(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?[")


def _exact(modules: dict[str, nn.Module], path: str, root: str) -> list[str]:
    for name in (path, f"{root}.{path}" if root else None):
        if name is not None and name in modules:
            return [name]
    return []


def _glob(modules: dict[str, nn.Module], pattern: str, spec: SpaceSpec) -> list[str]:
    candidates = list(modules)
    if spec.space == "lora":
        prefix = f"{spec.lora_root}." if spec.lora_root else ""
        lora_names = [name for name, module in modules.items()
                      if name.startswith(prefix) and is_lora_layer(module)]
        candidates = lora_names or candidates  # a model without peft: globs select plain modules
    patterns = [pattern] + ([f"{spec.lora_root}.{pattern}"] if spec.lora_root else [])
    return [name for name in candidates if any(fnmatch.fnmatchcase(name, p) for p in patterns)]


def _expand_placeholders(model: nn.Module, pattern: str, root: str) -> str:
    match = _PLACEHOLDER.search(pattern)
    if not match:
        return pattern
    container_path = pattern[: match.start()].rstrip(".")
    container = None
    for path in (container_path, f"{root}.{container_path}" if root else None):
        try:
            container = model.get_submodule(path) if path else model
            break
        except AttributeError:
            continue
    if container is None or not hasattr(container, "__len__") or len(container) == 0:
        raise ValueError(f"{pattern!r}: {{{match.group(1)}}} needs a non-empty module list at {container_path!r}")
    count = len(container)
    index = {"first": 0, "mid": count // 2, "last": count - 1}[match.group(1)]
    return _expand_placeholders(model, pattern[: match.start()] + str(index) + pattern[match.end():], root)


def _missing_message(space: str, pattern: str, modules: dict[str, nn.Module]) -> str:
    probe = pattern.replace("*", "").replace("?", "")
    close = difflib.get_close_matches(probe, [n for n in modules if n], n=5, cutoff=0.5)
    hint = f" Closest module names: {', '.join(close)}." if close else ""
    return (f"{space} space: no module matches {pattern!r}.{hint} "
            f"Module paths come from model.named_modules(); globs use fnmatch ('*' also matches dots).")


def is_lora_layer(module: nn.Module) -> bool:
    try:
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:  # no peft installed: nothing can be a LoRA layer
        return False
    return isinstance(module, BaseTunerLayer)


def _output_size(module: nn.Module):
    base = getattr(module, "base_layer", module)
    return getattr(base, "out_features", None) or getattr(base, "out_channels", None)


def _one_output_size(found: list[tuple[str, nn.Module]]) -> list[tuple[str, nn.Module]]:
    """Rows of one frame share a dimension: keep the largest group of same-size layers."""
    groups: dict[object, list[tuple[str, nn.Module]]] = defaultdict(list)
    for name, module in found:
        groups[_output_size(module)].append((name, module))
    if len(groups) <= 1:
        return found
    keep = max(groups.values(), key=len)
    dropped = [name for group in groups.values() if group is not keep for name, _ in group]
    log.warning("acestep_viz: LoRA layers of different output sizes cannot share a frame; capturing %d layers "
                "and skipping %s. Choose layers of one size with lora_layers / ACESTEP_VIZ_LORA_LAYERS.",
                len(keep), ", ".join(dropped))
    return keep


def _lora_bindings(found: list[tuple[str, nn.Module]], lora_output: str) -> list[Binding]:
    bindings: list[Binding] = []
    for name, module in found:
        if lora_output in ("output", "both"):
            bindings.append(Binding("lora", name, module))
        if lora_output in ("delta", "both"):
            bindings += _delta_bindings(name, module)
    return bindings


def _delta_bindings(name: str, layer: nn.Module) -> list[Binding]:
    lora_b = getattr(layer, "lora_B", None)
    if not is_lora_layer(layer) or lora_b is None:
        raise ValueError(f"lora space: {name!r} is a {type(layer).__name__}, not a peft LoRA layer, so it has no "
                         f"adapter contribution; use lora_output='output' or pick LoRA layers")
    adapters = [a for a in getattr(layer, "active_adapters", ()) if a in lora_b]
    if not adapters:
        raise ValueError(f"lora space: {name!r} has no active adapter with a lora_B module")
    return [Binding("lora", name + DELTA_SUFFIX + (f"[{a}]" if len(adapters) > 1 else ""), lora_b[a], layer, a)
            for a in adapters]
