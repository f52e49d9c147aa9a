"""AOTInductor: `torch.export` at the job's input, `torch._inductor.aoti_compile_and_package` into a `.pt2`
package (compiled kernels and weights, loadable without Python's model code), loaded back with Inductor's
package loader and timed. The package is the run's engine artifact; its build time is `build_time_s` (split
into `export_s` and `aoti_compile_s`). Inductor's caches are the persistent ones of
src/backends/support/inductor.py; on top of them, a package built for an identical job
(support/engine_cache.py) is reused whole, since even with Inductor's caches warm the package's C++
wrapper is compiled again. Two Inductor settings go into the package as `compile`'s do (`freezing`,
`coordinate_descent`): frozen weights in a package that a repeated job loads in seconds, where a frozen
`compile` traces and compiles again (Dynamo's precompile cannot keep a frozen graph). docs/backends.md says
why no candidate replays a package as a CUDA graph.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from src.backends.base import BACKENDS, Backend, EngineCacheOptions, InductorTuning
from src.backends.support.engine_cache import EngineCache, cache_key, cache_root, device_identity, key_inputs
from src.backends.support.exporting import export_program
from src.backends.support.inductor import cache_counts, cache_state, inductor_settings, use_persistent_caches
from src.shared.envinfo import cpu_model
from src.shared.errors import ConfigError

if TYPE_CHECKING:
    import torch


@BACKENDS.register("aotinductor")
class AOTInductor(Backend):
    imports = ("torch._dynamo", "torch._inductor.compile_fx", "torch.export")
    ahead = ("torch._dynamo",)  # not compile_fx: torch 2.11's opens the GPU driver

    @dataclass(frozen=True)
    class Options(EngineCacheOptions, InductorTuning):
        max_autotune: bool = False  # Inductor's max_autotune for the package's kernels (long builds)
        cxx: str | None = None  # C++ compiler of the package's wrapper; None: Inductor's ($CXX, else g++)

        def __post_init__(self) -> None:
            if self.cxx and shutil.which(self.cxx) is None:
                raise ConfigError(
                    f"backend 'aotinductor': cxx '{self.cxx}' is not an executable here; allowed: a C++ "
                    "compiler on PATH or its absolute path, or null for Inductor's ($CXX, else g++)"
                )

    def prepare(self, model: torch.nn.Module, example: torch.Tensor) -> Callable[[torch.Tensor], Any]:
        import torch
        from torch._inductor import cpp_builder

        self.tags.update(self.options.rewrite(model))
        folder = use_persistent_caches(self.options.cache_dir)
        self.tags["inductor_cache_dir"] = str(folder)
        o = self.options
        self.tags["inductor_compile_threads"] = str(inductor_settings(o.freezing, o.coordinate_descent, 0))
        # only the settings that are on: a package built before they existed keeps its cache key
        wanted = {"max_autotune": o.max_autotune, "freezing": o.freezing}
        wanted["coordinate_descent_tuning"] = o.coordinate_descent
        configs: dict[str, Any] = {k: True for k, on in wanted.items() if on}
        if self.options.cxx:
            configs["cpp.cxx"] = (None, self.options.cxx)
        with torch._inductor.config.patch(configs):
            self.tags["aoti_cxx"] = str(cpp_builder.get_cpp_compiler())
        cache = EngineCache(cache_root(self.options.cache_dir), "aotinductor") if self.options.cache else None
        # another compiler or CPU (the wrapper is compiled for this one's vector ISA): another package
        versions = {"torch": torch.__version__, "cxx": self.tags["aoti_cxx"], "cpu": cpu_model()}
        key = cache_key(key_inputs(self.job, device_identity(example.device), versions, configs))
        if cache is not None and cache.lookup(key) is not None:
            self._package = cache.entry(key) / "model.pt2"
            self.tags["aoti_package_cache"] = "hit"
        else:
            self._package = self._build(model, example, configs)
            if cache is not None:
                self._package = cache.store(key, {"model.pt2": self._package}, {"key": key}) / "model.pt2"
            self.tags["aoti_package_cache"] = "miss" if cache is not None else "off"
        return load_package(self._package, example.device.index if example.device.type == "cuda" else -1)

    def _build(self, model: torch.nn.Module, example: torch.Tensor, configs: dict[str, Any]) -> Path:
        import torch

        program, self.metrics["export_s"] = export_program(model, example)
        package = self.scratch() / "model.pt2"
        start = time.perf_counter()
        with torch.no_grad():  # inference: Inductor freezes only with gradients off
            torch._inductor.aoti_compile_and_package(
                program, package_path=str(package), inductor_configs=configs
            )
        self.metrics["aoti_compile_s"] = time.perf_counter() - start
        caches = cache_counts()
        self.metrics.update({f"inductor_{k}": float(v) for k, v in caches.items()})
        self.tags["inductor_cache"] = cache_state(caches)
        return package

    def export(self, out_dir: Path) -> list[Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        return [Path(shutil.copy(self._package, out_dir / self._package.name))]


def load_package(path: Path, device_index: int) -> Callable[..., Any]:
    """The package's runner, from Inductor's package loader. `aoti_load_package` wraps the same loader and
    then compares this host's CPU and GPU with the package's, only to warn on a mismatch; on a CPU with
    AVX-512 or AMX that comparison compiles a probe per instruction-set extension and loads each in a new
    Python process (tens of seconds). The package was built for this CPU, GPU and compiler (the cache key
    names them), so the loader is used directly; a torch without it gets `aoti_load_package`."""
    import torch

    try:
        from torch._inductor.package.package import AOTICompiledModel

        # as torch's own `load_package` calls it: path, model_name, run_single_threaded, num_runners,
        # device_index (tests/test_fast_paths.py checks this signature against the installed torch)
        loader = torch._C._aoti.AOTIModelPackageLoader(str(path), "model", False, 1, device_index)
    except (AttributeError, ImportError, TypeError):
        with torch._inductor.config.patch({"cpp.vec_isa_ok": True}):  # skips the base probe only
            return torch._inductor.aoti_load_package(str(path), device_index=device_index)
    return AOTICompiledModel(loader)
