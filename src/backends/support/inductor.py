"""What the Inductor-based backends (`compile`, `aotinductor`) share: persistent caches and their counters.

Inductor compiles are expensive, so its caches (FX graphs, AOT-autograd
artifacts, autotuning results, Triton kernels) live in one folder shared by every job of a sweep and by later
sweeps: `<cache root>/inductor` (the root is `backend.options.cache_dir`, else $BENCH_CACHE_DIR, else
~/.cache/gpu-inference-bench). Each job is a fresh process, so setting the environment before the first
compile is enough. The run records how many cache lookups hit and missed.
"""

from __future__ import annotations

import os
from pathlib import Path

from src.backends.support.engine_cache import cache_root

CACHE_COUNTERS = {
    "fxgraph_cache_hit": ("inductor", "fxgraph_cache_hit"),
    "fxgraph_cache_miss": ("inductor", "fxgraph_cache_miss"),
    "fxgraph_cache_bypass": ("inductor", "fxgraph_cache_bypass"),
    "autograd_cache_hit": ("aot_autograd", "autograd_cache_hit"),
    "autograd_cache_miss": ("aot_autograd", "autograd_cache_miss"),
}


def use_persistent_caches(configured: str | None) -> Path:
    """Point Inductor and Triton at the shared cache folder; return it."""
    folder = cache_root(configured) / "inductor"
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)  # Triton's kernels go under it too (triton/<device>)
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    inductor_config.fx_graph_cache = True  # PyTorch's defaults; set so an environment cannot turn them off
    inductor_config.autotune_local_cache = True
    functorch_config.enable_autograd_cache = True
    return folder


def cache_counts() -> dict[str, int]:
    from torch._dynamo.utils import counters

    return {name: int(counters[group][key]) for name, (group, key) in CACHE_COUNTERS.items()}


def cache_state(counts: dict[str, int]) -> str:
    """hit (every FX-graph lookup hit), miss (none did), partial, or none (no lookup was made)."""
    hits, misses = counts["fxgraph_cache_hit"], counts["fxgraph_cache_miss"]
    if hits + misses == 0:
        return "none"
    return "hit" if misses == 0 else "miss" if hits == 0 else "partial"


def inductor_settings(freezing: bool, coordinate_descent: bool, compile_threads: int) -> int:
    """Set Inductor's freezing, coordinate-descent tuning and parallel compile workers before a compile
    (0 workers: the cores this process may run on); return the workers."""
    import torch._inductor.config as inductor_config

    threads = compile_threads or len(os.sched_getaffinity(0))
    inductor_config.freezing = freezing
    inductor_config.coordinate_descent_tuning = coordinate_descent
    inductor_config.compile_threads = threads
    return threads
