"""The backend interface: what a way of running a model must provide."""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from src.shared.envinfo import torch_build
from src.shared.errors import Unsupported
from src.shared.registry import NoOptions, Registry, parse_options
from src.shared.spec import PRECISIONS

if TYPE_CHECKING:
    import torch

    from src.shared.spec import JobSpec, ModelConfig

BACKENDS: Registry[type[Backend]] = Registry("backend", "src.backends")


@dataclass(frozen=True)
class CacheDirOption:
    """For backends with caches: where they live (declared once for all of them)."""

    cache_dir: str | None = None  # None: $BENCH_CACHE_DIR, else ~/.cache/gpu-inference-bench


@dataclass(frozen=True)
class InductorTuning:
    """For backends that compile with Inductor: its settings that change the compiled code, named in the
    run's name after the mode (`src/shared/spec.py: NAMED_FLAGS`) and part of the cache keys."""

    freezing: bool = False  # Inductor freezing: weights as constants, conv/BN folded at compile time
    coordinate_descent: bool = False  # Inductor's coordinate-descent tuning of Triton kernel settings
    # GroupNorm computed from per-channel statistics before the model is traced (support/groupnorm.py);
    # a model without GroupNorm ends `unsupported`
    gn_channel_stats: bool = False

    def tuning(self) -> dict[str, bool]:
        """These settings by name (engine-cache keys; the GroupNorm rewrite only when on, so that what
        was cached before it existed keeps its key)."""
        named = {"freezing": self.freezing, "coordinate_descent": self.coordinate_descent}
        return {**named, "gn_channel_stats": True} if self.gn_channel_stats else named

    def rewrites(self) -> dict[str, str]:
        """The torch.nn layers these settings rewrite, each with why a model without it is unsupported."""
        if not self.gn_channel_stats:
            return {}
        why = "backend.options.gn_channel_stats=true: the model has no GroupNorm, so the run would repeat"
        return {"GroupNorm": f"{why} the one without it"}

    def rewrite(self, model: torch.nn.Module) -> dict[str, str]:
        """Apply the model rewrites these settings ask for, in place, before the model is traced; return
        the run's tags saying what was rewritten. Raises `Unsupported` where a rewrite finds nothing."""
        if not self.gn_channel_stats:
            return {}
        from src.backends.support.groupnorm import use_channel_stats

        replaced = use_channel_stats(model)
        if not replaced:
            raise Unsupported(self.rewrites()["GroupNorm"])
        return {"gn_channel_stats_replaced": str(replaced)}


@dataclass(frozen=True)
class EngineCacheOptions(CacheDirOption):
    """For backends whose whole build is cached (TensorRT engines, AOTInductor packages)."""

    cache: bool = True  # reuse what was built for an identical job; the run says hit / miss


class Backend(ABC):
    """One way of running a model. Subclasses are registered with `@BACKENDS.register("<yaml name>")`.

    Lifecycle: `precheck` (in the Hydra process, then again in the child) -> in the measuring child,
    `unavailable` and `supports` -> `prepare` (timed as the build) -> the
    returned callable is timed -> `finish` (what the timed loop changed) -> `export` writes the artifact it
    built (if any) for MLflow -> `close`, always, however far the job got (removes `scratch()` folders).

    What a backend can run is declared up front (`precisions`, `channels_last`, `tf32`) and checked when the
    config is validated, before any model is built; what depends on the device is `supports`' answer.
    """

    precisions: ClassVar[tuple[str, ...]] = PRECISIONS
    channels_last: ClassVar[bool] = True  # False: the backend cannot take a channels-last input
    tf32: ClassVar[bool] = True  # False: the backend ignores PyTorch's TF32 switches (tf32 must stay default)
    Options: ClassVar[type] = NoOptions
    # what `prepare` imports: the child imports it before the build is timed
    imports: ClassVar[tuple[str, ...]] = ()
    # those of `imports` the template imports ahead of the jobs: only modules that do not open the GPU
    # driver as they are imported (a template holding it cannot fork; torch 2.11's Inductor does open it)
    ahead: ClassVar[tuple[str, ...]] = ()

    def __init__(self, options: Any, job: JobSpec) -> None:
        self.options = options
        self.job = job  # the whole job, for backends whose artifacts depend on more than the model
        self.tags: dict[str, str] = {}  # what the backend decided while preparing (logged as tags)
        self.metrics: dict[str, float] = {}  # what preparing measured beyond the build time
        self._scratch: list[Path] = []

    @classmethod
    def parse_options(cls, name: str, options: dict[str, Any]) -> Any:
        return parse_options(cls.Options, f"backend '{name}'", options)

    @classmethod
    def rewrites(cls, options: Any) -> dict[str, str]:
        """The torch.nn layers (class names) these options rewrite before the build, each with why a
        model without it is unsupported: a model whose declared `norms` lack it is refused unbuilt."""
        return options.rewrites() if isinstance(options, InductorTuning) else {}

    @classmethod
    def version(cls) -> str:
        """The version its runs are tagged with (`backend_version`); torch's by default, read without
        importing torch (the Hydra process asks too)."""
        return torch_build()["torch_version"]

    @classmethod
    def precheck(cls, job: JobSpec, device_type: str) -> None:
        """What is decided without running anything: raise `Unavailable` (a package that cannot be found,
        no CUDA device) or `Unsupported` (this device or setting, by the backend's own rules). The Hydra
        process asks first and records such a job without a measuring child or the device lock; the child
        asks again. `device_type`: "cuda" or "cpu". Import nothing heavy here (see `missing`)."""
        return None

    def unavailable(self, device: torch.device) -> str | None:
        """What is missing for this backend here (a package, a CUDA device): the job ends `unavailable`."""
        return None

    def supports(self, model: ModelConfig, device: torch.device) -> str | None:
        """Why this backend cannot run this model on this device (the job ends `unsupported`), or None."""
        return None

    @abstractmethod
    def prepare(self, model: torch.nn.Module, example: torch.Tensor) -> Callable[[torch.Tensor], Any]:
        """Turn the placed model (device, dtype and layout already applied) into the callable to time."""

    def finish(self) -> None:
        """After the timed loop: update `metrics`/`tags` with what it changed (recompilations, ...)."""
        return None

    def export(self, out_dir: Path) -> list[Path]:
        """Write the artifact the backend built (engine, program, ...) into out_dir; return the files."""
        return []

    def scratch(self) -> Path:
        """A temporary folder for what the backend builds; removed by `close`, whatever happens."""
        folder = Path(tempfile.mkdtemp(prefix=f"bench-{type(self).__name__.lower()}-"))
        self._scratch.append(folder)
        return folder

    def close(self) -> None:
        """Remove the scratch folders (the child calls this after `export`, or after a failure)."""
        for folder in self._scratch:
            shutil.rmtree(folder, ignore_errors=True)
        self._scratch.clear()


def missing(*modules: str) -> str | None:
    """The import error the first of these top-level modules that cannot be found would raise, found
    without importing it (`importlib.util.find_spec`); None when all are there."""
    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            return f"ModuleNotFoundError: No module named '{name}'"
    return None
