"""What a model definition provides: its options, the inputs it accepts, and how to build it (no network)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from src.shared.errors import ConfigError
from src.shared.registry import NoOptions, Registry, parse_options

if TYPE_CHECKING:
    from torch import nn

    from src.shared.spec import ModelConfig

MODELS: Registry[type[ModelDef]] = Registry("model", "src.models")


class ModelDef(ABC):
    """A benchmarkable model. Subclasses are registered with `@MODELS.register("<yaml name>")`.

    Heavy libraries (torchvision, ultralytics, monai) are imported inside `build` only, so validation
    and the report never need them.
    """

    task: ClassVar[str]
    task_title: ClassVar[str | None] = None  # the task as the report names it; None: task, capitalised
    variants: ClassVar[tuple[str, ...] | None] = None  # None: any variant `check_variant` accepts
    imports: ClassVar[tuple[str, ...]] = ()  # what `build` imports: the template imports it once per sweep
    # the torch.nn normalisation layers its network may hold (class names, any options): a backend option
    # that rewrites a layer the model lacks is refused before the model is built; None: not declared
    norms: ClassVar[frozenset[str] | None] = None
    Options: ClassVar[type] = NoOptions

    @classmethod
    def parse_options(cls, name: str, options: dict[str, Any]) -> Any:
        return parse_options(cls.Options, f"model '{name}'", options)

    @classmethod
    def check_variant(cls, variant: str) -> str | None:
        if cls.variants is not None and variant not in cls.variants:
            return f"unknown variant '{variant}'; allowed: {', '.join(cls.variants)}"
        return None

    @classmethod
    @abstractmethod
    def check_input(cls, shape: tuple[int, ...], options: Any) -> str | None:
        """Why this per-sample input shape cannot be taken, or None."""

    @classmethod
    def check(cls, spec: ModelConfig) -> Any:
        """Refuse a spec this model cannot take, with a message naming what is allowed; else its parsed
        options."""
        options = cls.parse_options(spec.name, spec.options)
        problems = [cls.check_variant(spec.variant)]
        if any(not isinstance(d, int) or d <= 0 for d in spec.input_shape):
            problems.append(f"input_shape must be positive integers, got {list(spec.input_shape)}")
        else:
            problems.append(cls.check_input(tuple(spec.input_shape), options))
        if spec.weights is not None and not Path(spec.weights).is_file():
            problems.append(f"weights file not found: {spec.weights} (give a local file, or null for random)")
        elif spec.weights is not None and not any(problems):
            problems.append(cls.check_weights(spec))
        problems = [p for p in problems if p]
        if problems:
            raise ConfigError(f"model '{spec.name}': " + "; ".join(problems))
        return options

    @classmethod
    def check_weights(cls, spec: ModelConfig) -> str | None:
        """Why the weights file cannot be this model's, or None: it must load with `weights_only=True`
        (no code runs) and its keys and shapes must be the model's (built on the meta device: no memory,
        no time). Models that load another format override this."""
        import torch

        try:
            state = _state_dict(torch.load(spec.weights, map_location="cpu", weights_only=True))
        except Exception as exc:  # PyTorch's own advice (weights_only=False) would run the file's code
            return (
                f"weights file {spec.weights} is not a state dict that loads safely (torch.load with "
                f"weights_only=True failed: {type(exc).__name__}); give a state-dict file, or null for "
                "random weights"
            )
        if not isinstance(state, dict):
            return f"weights file {spec.weights} holds a {type(state).__name__}, not a state dict"
        with torch.device("meta"):
            expected = cls.build(replace(spec, weights=None)).state_dict()
        return state_dict_mismatch(spec, state, expected)

    @classmethod
    @abstractmethod
    def build(cls, spec: ModelConfig) -> nn.Module:
        """The model in eval mode on the CPU, in float32; weights from `spec.weights` or random."""


def _state_dict(state: Any) -> Any:
    """A plain state dict, or the one a checkpoint dict holds under 'state_dict' or 'model'."""
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                return state[key]
    return state


def state_dict_mismatch(spec: ModelConfig, state: dict, expected: dict) -> str | None:
    """One paragraph on how a state dict differs from the model's: counts and a few examples."""
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k}: file {tuple(state[k].shape)}, model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if not (missing or unexpected or shapes):
        return None
    parts = []
    for what, items in (("missing", missing), ("unexpected", unexpected), ("with other shapes", shapes)):
        if items:
            parts.append(f"{len(items)} {what} (e.g. {'; '.join(items[:2])})")
    return (
        f"weights file {spec.weights} does not fit {spec.variant} ({len(expected)} keys): "
        + ", ".join(parts)
        + "; give this model's state dict, or null for random weights"
    )


def load_state_dict(model: nn.Module, path: str) -> None:
    """Load a plain state dict (or a checkpoint dict holding one under 'state_dict'/'model')."""
    import torch

    model.load_state_dict(_state_dict(torch.load(path, map_location="cpu", weights_only=True)))


def image_shape_problem(shape: tuple[int, ...], channels: int, multiple: int, minimum: int) -> str | None:
    """Shared check for 2D image models taking (C, H, W)."""
    if len(shape) != 3:
        return f"input_shape must be [C, H, W] (3 numbers), got {list(shape)}"
    c, h, w = shape
    if c != channels:
        return f"input_shape needs {channels} channels, got {c}"
    if h < minimum or w < minimum:
        return f"height and width must be at least {minimum}, got {h}x{w}"
    if h % multiple or w % multiple:
        return f"height and width must be divisible by {multiple}, got {h}x{w}"
    return None
