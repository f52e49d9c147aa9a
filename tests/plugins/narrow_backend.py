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


@BACKENDS.register("memo")
class Memo(Eager):
    """Faster than eager and right: the model runs once, each call then waits 1 ms and returns that output
    (the input never changes). For the best-available column."""

    def prepare(self, model, example):
        import time

        out = model(example)

        def call(x):
            time.sleep(0.001)
            return out

        return call


@BACKENDS.register("fast_but_wrong")
class FastButWrong(Eager):
    """Fastest of all and wrong (zeros): parity fails, so it is never the best available."""

    def prepare(self, model, example):
        out = model(example) * 0
        return lambda x: out
