"""A test-only backend that runs fp32 only (eager underneath), for the precision-refusal path."""

from __future__ import annotations

from src.backends.base import BACKENDS
from src.backends.eager import Eager


@BACKENDS.register("fp32_only")
class Fp32Only(Eager):
    precisions = ("fp32",)
