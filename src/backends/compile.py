"""`torch.compile` with Inductor, static shapes, `mode` as a setting.

Before compiling, the model is called once eagerly, as Ultralytics' exporter does: state a model caches on
its first call (YOLO's anchors, computed with `.item()` on the strides) is then in place instead of traced,
where it would break the graph (docs/backends.md, "Fast paths", says what that did to YOLOv5u). The compile
happens on the first calls, so `prepare` makes them (under `torch.inference_mode()`, as the timed loop
runs) and the build time is the compile. Dynamo's counters
then give the graphs made, the graph breaks (above zero: a warning and a tag, since "compiled" is then
partly eager) and any recompilation during the timed loop. Inductor's caches are persistent
(support/inductor.py); the run records whether they were hit. With `precompile` (the default), the
graph is captured whole ahead of the first call and the compiled module kept in the engine cache, so a
repeated job loads it instead of tracing again (src/backends/support/precompile.py; tag `precompile`).

`reduce-overhead` adds CUDA graphs (Inductor's cudagraph trees), which record during the first calls:
`warm_calls` covers them. `max-autotune` benchmarks kernel choices on the device (long builds); its results
are cached like the rest. Two Inductor settings compose with any mode: `freezing` (the weights become
constants, so convolution/batch-norm folding and weight layout are done once, at compile time) and
`coordinate_descent` (Triton kernels' launch settings tuned around the heuristic's choice). Inductor's
parallel compile workers use the cores this process may run on (`compile_threads`, tag
`inductor_compile_threads`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from src.backends.base import BACKENDS, Backend, CacheDirOption, InductorTuning
from src.backends.support import precompile
from src.backends.support.inductor import (
    cache_counts,
    cache_state,
    inductor_settings,
    use_persistent_caches,
)
from src.shared.errors import ConfigError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def dynamo_counts() -> dict[str, int]:
    from torch._dynamo.utils import counters

    return {
        "graph_breaks": int(sum(counters["graph_break"].values())),
        "unique_graphs": int(counters["stats"]["unique_graphs"]),
        "frames_compiled": int(counters["frames"]["ok"]),
    }


@BACKENDS.register("compile")
class Compile(Backend):
    imports = ("torch._dynamo", "torch._inductor.compile_fx")
    ahead = ("torch._dynamo",)  # not compile_fx: torch 2.11's opens the GPU driver

    @dataclass(frozen=True)
    class Options(CacheDirOption, InductorTuning):
        mode: str = "default"  # default | reduce-overhead | max-autotune | max-autotune-no-cudagraphs
        fullgraph: bool = False  # true: a graph break is an error instead of a warning
        warm_calls: int = 3  # calls made while preparing (compile, CUDA-graph recording); part of the build
        precompile: bool = True  # Dynamo's precompile, kept in the engine cache (support/precompile.py)
        compile_threads: int = 0  # Inductor's parallel compile workers; 0: the cores this process may use

        def __post_init__(self) -> None:
            if self.mode not in MODES:
                raise ConfigError(f"backend 'compile': mode '{self.mode}'; allowed: {', '.join(MODES)}")
            if self.warm_calls < 1:
                raise ConfigError(f"backend 'compile': warm_calls must be >= 1, got {self.warm_calls}")
            if self.compile_threads < 0:
                raise ConfigError(
                    f"backend 'compile': compile_threads must be >= 0 (0: the cores this process may use), "
                    f"got {self.compile_threads}"
                )

    def prepare(self, model: torch.nn.Module, example: torch.Tensor) -> Callable[[torch.Tensor], Any]:
        import torch
        from torch._dynamo.utils import counters

        self.tags.update(self.options.rewrite(model))
        folder = use_persistent_caches(self.options.cache_dir)
        self.tags["inductor_compile_threads"] = str(
            inductor_settings(
                self.options.freezing, self.options.coordinate_descent, self.options.compile_threads
            )
        )
        torch._dynamo.reset()
        counters.clear()  # this build's counts (a job's child is a fresh process; a test's is not)
        with torch.inference_mode():
            model(example)  # the eager dry run (see the module's docstring); part of the build time
            start = time.perf_counter()
            fn, self.tags["precompile"] = None, "off: backend.options.precompile=false"
            if self.options.precompile:
                fn, self.tags["precompile"] = precompile.load_or_compile(
                    model,
                    example,
                    self.job,
                    self.options.mode,
                    self.options.cache_dir,
                    self.scratch,
                    self.options.tuning(),
                )
            if fn is None:  # the JIT path: Dynamo traces on the first call
                torch._dynamo.reset()
                counters.clear()  # a failed precompile's counts are not this path's
                mode = None if self.options.mode == "default" else self.options.mode
                fn = torch.compile(model, mode=mode, fullgraph=self.options.fullgraph, dynamic=False)
                fn(example)
            if example.device.type == "cuda":
                torch.cuda.synchronize(example.device)
            self.metrics["compile_s"] = time.perf_counter() - start
            for _ in range(self.options.warm_calls - 1):
                fn(example)
        self.tags["inductor_cache_dir"] = str(folder)
        self._record("compile")
        return fn

    def _record(self, when: str) -> None:
        counts = dynamo_counts()
        caches = cache_counts()
        self.metrics.update({f"dynamo_{k}": float(v) for k, v in counts.items()})
        self.metrics.update({f"inductor_{k}": float(v) for k, v in caches.items()})
        self.tags["inductor_cache"] = cache_state(caches)
        self.tags["graph_breaks"] = str(counts["graph_breaks"])
        if counts["graph_breaks"]:
            from torch._dynamo.utils import counters

            reasons = "; ".join(sorted({r.strip().splitlines()[0] for r in counters["graph_break"]}))[:500]
            self.tags["graph_break_reasons"] = reasons
            log.warning("torch.compile: %d graph breaks (%s): %s", counts["graph_breaks"], when, reasons)

    def finish(self) -> None:
        """After the timed loop: any graph compiled since `prepare` is a recompilation inside the figures."""
        before = self.metrics["dynamo_unique_graphs"]
        self._record("after the timed loop")
        self.metrics["dynamo_recompiles_timed"] = self.metrics["dynamo_unique_graphs"] - before
        if self.metrics["dynamo_recompiles_timed"]:
            log.warning("torch.compile compiled again during the timed loop: its figures include compiling")
