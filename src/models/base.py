"""What a model definition provides: its options, the inputs it accepts, and how to build it (no network)."""

from __future__ import annotations

from abc import ABC, abstractmethod
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
    def check(cls, spec: ModelConfig) -> None:
        """Refuse a spec this model cannot take, with a message naming what is allowed."""
        options = cls.parse_options(spec.name, spec.options)
        problems = [cls.check_variant(spec.variant)]
        if any(not isinstance(d, int) or d <= 0 for d in spec.input_shape):
            problems.append(f"input_shape must be positive integers, got {list(spec.input_shape)}")
        else:
            problems.append(cls.check_input(tuple(spec.input_shape), options))
        if spec.weights is not None and not Path(spec.weights).is_file():
            problems.append(f"weights file not found: {spec.weights} (give a local file, or null for random)")
        problems = [p for p in problems if p]
        if problems:
            raise ConfigError(f"model '{spec.name}': " + "; ".join(problems))

    @classmethod
    @abstractmethod
    def build(cls, spec: ModelConfig) -> nn.Module:
        """The model in eval mode on the CPU, in float32; weights from `spec.weights` or random."""


def load_state_dict(model: nn.Module, path: str) -> None:
    """Load a plain state dict (or a checkpoint dict holding one under 'state_dict'/'model')."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
    model.load_state_dict(state)


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
