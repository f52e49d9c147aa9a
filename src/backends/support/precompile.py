"""Dynamo's ahead-of-time precompile for the `compile` backend: trace and compile once, keep the result.

With Inductor's caches hit, a compiled job still spends most of a warm build in Dynamo tracing the model
again (no cache covers it). Dynamo's precompile
(`torch.compile(model, fullgraph=True)._aot_compile`, experimental since torch 2.10) captures the whole
graph, compiles it with the same backend and mode, and serializes the compiled module with its guards.
The module is stored in the engine cache (engine_cache.py: the job's model, weights, batch,
precision and layout, the device, torch and the model library's versions, the mode), and a later job with
the same key loads it instead of tracing. Its guards are checked on every call, as the JIT path's are.

It needs a graph without breaks, a mode without CUDA graphs and no freezing; where one is missing, or
anything in this experimental path raises, the job compiles on its first call as before (`torch.compile`'s
JIT path) and the run's tag `precompile` says why.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from src.backends.support.engine_cache import EngineCache, cache_key, cache_root, device_identity, key_inputs
from src.shared.envinfo import cpu_model, library_versions

if TYPE_CHECKING:
    import torch

    from src.shared.spec import JobSpec

log = logging.getLogger(__name__)

FILE = "module.bin"
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")  # their CUDA graphs are recorded at run time


def problem(mode: str, tuning: dict[str, bool] | None = None) -> str | None:
    """Why this torch, mode or tuning cannot precompile (None: it can)."""
    import torch._dynamo.config as dynamo_config
    from torch._dynamo.eval_frame import OptimizedModule

    if mode in CUDA_GRAPH_MODES:
        return f"mode '{mode}' records CUDA graphs, which a precompiled module does not carry"
    if (tuning or {}).get("freezing"):
        # the precompile bundles AOT-autograd's cache entry, which holds no frozen graph: the attempt
        # fails (AssertionError: expected OutputCode) only after a whole compile
        return "Inductor freezing: a precompiled module cannot hold a frozen graph"
    if not hasattr(dynamo_config, "enable_aot_compile") or not hasattr(OptimizedModule, "_aot_compile"):
        return "this torch has no Dynamo precompile (torch >= 2.10 has)"
    return None


def model_library_versions(job: JobSpec) -> dict[str, str]:
    """torch's and the model's libraries' versions (the precompiled module holds their code's bytecode)
    and the CPU's model."""
    import torch

    from src.models import MODELS

    packages = sorted({module.split(".")[0] for module in MODELS.get(job.model.name).imports})
    return {"torch": torch.__version__, "cpu": cpu_model(), **library_versions(packages)}


def load_or_compile(
    model: torch.nn.Module,
    example: torch.Tensor,
    job: JobSpec,
    mode: str,
    cache_dir: str | None,
    scratch: Callable[[], Path],
    tuning: dict[str, bool] | None = None,
) -> tuple[Callable[[torch.Tensor], Any] | None, str]:
    """The precompiled module after its first call (None: fall back to the JIT path) and the tag: `hit`
    (loaded from the cache), `miss` (compiled and stored), or `off: why`. Runs under inference mode."""
    import torch

    why = problem(mode, tuning)
    if why:
        return None, f"off: {why}"
    cache = EngineCache(cache_root(cache_dir), "compile")
    versions = model_library_versions(job)
    settings = {"mode": mode, **(tuning or {})}  # what changes the compiled code beyond the job's own keys
    key = cache_key(key_inputs(job, device_identity(example.device), versions, settings))
    compiled = torch.compile(model, mode=None if mode == "default" else mode, fullgraph=True, dynamic=False)
    hit = cache.lookup(key) is not None
    try:
        from torch._dynamo.aot_compile import ModelInput

        with torch._dynamo.config.patch(enable_aot_compile=True):
            if hit:
                compiled._load_aot_compiled_module((cache.entry(key) / FILE).read_bytes())
            else:
                inputs = [ModelInput(args=(example,), kwargs={}, contexts=[torch.inference_mode()])]
                compiled._aot_compile(inputs)
                path = scratch() / FILE
                compiled._save_aot_compiled_module(str(path))
        compiled(example)  # the first call: guards checked, kernels loaded
        if not hit:  # stored once it has run
            cache.store(key, {FILE: path}, {"key": key, **settings})
    except Exception as e:  # an experimental path: any failure falls back to the JIT path, with the reason
        if hit:  # a module that no longer loads or whose guards fail: the next job stores a new one
            shutil.rmtree(cache.entry(key), ignore_errors=True)
        reason = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        log.warning("precompile failed (%s); compiling on the first call instead", reason)
        return None, f"off: failed, compiled on the first call instead ({reason})"[:500]
    return compiled, "hit" if hit else "miss"
