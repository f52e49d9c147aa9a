"""Native PyTorch: the model as it is, at the job's precision and layout."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from src.backends.base import BACKENDS, Backend

if TYPE_CHECKING:
    import torch


@BACKENDS.register("eager")
class Eager(Backend):
    def prepare(self, model: torch.nn.Module, example: torch.Tensor) -> Callable[[torch.Tensor], Any]:
        return model
