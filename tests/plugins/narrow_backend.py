"""A test-only backend that runs fp32 only (eager underneath), for the precision-refusal path."""

from __future__ import annotations

from src.backends.base import BACKENDS
from src.backends.eager import Eager


@BACKENDS.register("fp32_only")
class Fp32Only(Eager):
    precisions = ("fp32",)


@BACKENDS.register("off_by_a_percent")
class OffByAPercent(Eager):
    """Computes a slightly different function (every output scaled by 1.01): parity must catch it."""

    def prepare(self, model, example):
        return lambda x: model(x) * 1.01
