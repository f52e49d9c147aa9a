"""TensorRT through torch-tensorrt's dynamo path: `torch.export` at the job's exact input, then
`torch_tensorrt.dynamo.compile`, with engines cached across sweeps (src/backends/support/engine_cache.py).

Precision: the job's model and input already have the job's dtype (`place`). torch-tensorrt 2.10 made
explicit typing the default (the engine follows the graph's dtypes, and `enabled_precisions={torch.half}`
raises), and 2.13 removed both options; before 2.10 a half-precision engine needed `enabled_precisions`.
`typing_kwargs` picks the form by the installed version and the run records which (`tensorrt_typing`).

This is the only module that imports `tensorrt` or `torch_tensorrt`; where either cannot be imported, or
there is no CUDA device, the job ends `unavailable` with the install hint.
"""

from __future__ import annotations

import logging
import operator
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from src.backends.base import BACKENDS, Backend, EngineCacheOptions, missing
from src.backends.support.engine_cache import EngineCache, cache_key, cache_root, key_inputs
from src.backends.support.exporting import export_program
from src.shared.errors import Unavailable

if TYPE_CHECKING:
    import torch

    from src.shared.spec import JobSpec

log = logging.getLogger(__name__)

# torch-tensorrt as this backend uses it, in one place: the functions it calls (relative to the package),
# the class of a compiled engine's module and the attribute holding its bytes. `api_keywords` gives the
# keywords each call passes; tests/test_tensorrt_contract.py checks all of it against the pinned release's
# sources (docs/backends.md, "Moving the torch-tensorrt pin").
COMPILE = "dynamo.compile"
SAVE = "save"
LOAD = "load"
ENGINE_CLASS = "TorchTensorRTModule"
ENGINE_BYTES = "serialized_engine"
SAVE_FORMAT = "exported_program"

INSTALL_HINT = (
    "install it with `pip install -e '.[tensorrt]'` (torch-tensorrt, which pulls TensorRT from NVIDIA's "
    "package index) or run in an NGC PyTorch container"
)


def typing_kwargs(torch_tensorrt_version: str, dtype: torch.dtype) -> tuple[dict[str, Any], str]:
    """The compile arguments that make the engine run at `dtype`, for this torch-tensorrt release."""
    import torch

    major, minor = (int(p) for p in torch_tensorrt_version.split(".")[:2])
    if (major, minor) < (2, 10):
        if dtype == torch.float32:
            return {}, "weak typing (fp32 engine)"
        return {"enabled_precisions": {dtype}}, f"weak typing: enabled_precisions={{{dtype}}}"
    if (major, minor) < (2, 13):
        return {"use_explicit_typing": True}, "explicit typing: use_explicit_typing=True (the graph's dtypes)"
    return {}, "explicit typing (the graph's dtypes; strongly typed by default)"


def compile_settings(options: TensorRT.Options) -> dict[str, Any]:
    """The builder settings the options ask for, as `torch_tensorrt.dynamo.compile` keywords."""
    settings: dict[str, Any] = {
        "min_block_size": options.min_block_size,
        "require_full_compilation": options.require_full_compilation,
    }
    if options.optimization_level is not None:
        settings["optimization_level"] = options.optimization_level
    if options.workspace_gib is not None:
        settings["workspace_size"] = int(options.workspace_gib * 2**30)
    return settings


def compile_kwargs(example: Any, timing_cache: str, settings: dict, typing: dict) -> dict[str, Any]:
    """Every keyword of the one `COMPILE` call."""
    return {"arg_inputs": [example], "timing_cache_path": timing_cache, **settings, **typing}


def save_kwargs(example: Any) -> dict[str, Any]:
    """Every keyword of the one `SAVE` call."""
    return {"output_format": SAVE_FORMAT, "arg_inputs": [example]}


def api_keywords(torch_tensorrt_version: str) -> dict[str, set[str]]:
    """Per torch-tensorrt function this backend calls (`torch_tensorrt.<name>`), the keywords it passes to
    that release, every optional setting given: what a release must accept."""
    import torch

    every = TensorRT.Options(optimization_level=3, workspace_gib=1.0)
    keywords: set[str] = set()
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        typing, _ = typing_kwargs(torch_tensorrt_version, dtype)
        keywords |= set(compile_kwargs(None, "", compile_settings(every), typing))
    return {
        f"torch_tensorrt.{COMPILE}": keywords,
        f"torch_tensorrt.{SAVE}": set(save_kwargs(None)),
        f"torch_tensorrt.{LOAD}": set(),
    }


def partition_counts(compiled: torch.fx.GraphModule) -> tuple[int, Counter]:
    """TensorRT engines, and the operators left to PyTorch, in a compiled module."""
    engines, fallback = 0, Counter()
    graphs = [compiled.graph]
    for _, child in compiled.named_children():
        if type(child).__name__ == ENGINE_CLASS:
            engines += 1
        elif hasattr(child, "graph"):
            graphs.append(child.graph)
    for graph in graphs:
        for node in graph.nodes:
            if node.op == "call_function" and node.target is not operator.getitem:
                fallback[str(node.target)] += 1
    return engines, fallback


@BACKENDS.register("tensorrt")
class TensorRT(Backend):
    @dataclass(frozen=True)
    class Options(EngineCacheOptions):
        min_block_size: int = 5  # torch-tensorrt's default: smaller TensorRT-capable runs stay in PyTorch
        optimization_level: int | None = None  # TensorRT builder level 0-5; None: TensorRT's default (3)
        workspace_gib: float | None = None  # None: TensorRT's default (the device's memory)
        require_full_compilation: bool = False

    @classmethod
    def version(cls) -> str:
        try:
            return metadata.version("torch-tensorrt")
        except metadata.PackageNotFoundError:
            return "not installed"

    @classmethod
    def precheck(cls, job: JobSpec, device_type: str) -> None:
        if device_type != "cuda":
            raise Unavailable(f"TensorRT needs a CUDA GPU; this job runs on {device_type}")
        if why := missing("tensorrt", "torch_tensorrt"):
            raise Unavailable(f"torch_tensorrt/tensorrt cannot be imported ({why}); {INSTALL_HINT}")

    def unavailable(self, device: torch.device) -> str | None:
        try:  # found, but an install can still be broken
            import tensorrt  # noqa: F401
            import torch_tensorrt  # noqa: F401
        except Exception as exc:  # ImportError, or a broken install failing at import
            return f"torch_tensorrt/tensorrt cannot be imported ({type(exc).__name__}: {exc}); {INSTALL_HINT}"
        return None

    def prepare(self, model: torch.nn.Module, example: torch.Tensor) -> Callable[[torch.Tensor], Any]:
        import tensorrt
        import torch
        import torch_tensorrt

        program, self.metrics["export_s"] = export_program(model, example)
        versions = {"torch": torch.__version__, "torch_tensorrt": torch_tensorrt.__version__}
        versions["tensorrt"] = tensorrt.__version__
        typing, typing_tag = typing_kwargs(torch_tensorrt.__version__, example.dtype)
        props = torch.cuda.get_device_properties(example.device)
        device = {"name": props.name, "capability": f"{props.major}.{props.minor}"}
        settings = compile_settings(self.options)
        inputs = key_inputs(self.job, device, versions, {**settings, "typing": typing_tag})
        key = cache_key(inputs)
        root = cache_root(self.options.cache_dir)
        cache = EngineCache(root, "tensorrt") if self.options.cache else None
        meta = cache.lookup(key) if cache else None
        if meta is not None:
            self._files = [p for p in cache.entry(key).iterdir() if p.name != "meta.json"]
            load = operator.attrgetter(LOAD)(torch_tensorrt)
            module = load(str(cache.entry(key) / "program.ep")).module()
            state = "hit"
        else:
            card = props.name.replace(" ", "_")
            timing_cache = root / "tensorrt" / "timing" / f"{card}-trt{tensorrt.__version__}.bin"
            timing_cache.parent.mkdir(parents=True, exist_ok=True)
            start = time.perf_counter()
            compile_program = operator.attrgetter(COMPILE)(torch_tensorrt)
            module = compile_program(program, **compile_kwargs(example, str(timing_cache), settings, typing))
            torch.cuda.synchronize(example.device)
            engines, fallback = partition_counts(module)
            meta = {
                "engines": engines,
                "fallback_ops": sum(fallback.values()),
                "fallback_op_kinds": sorted(fallback),
                "engine_build_s": time.perf_counter() - start,
                "typing": typing_tag,
                "key_inputs": inputs,
            }
            self._files = self._save(module, example, torch_tensorrt)
            if cache is not None:
                entry = cache.store(key, {p.name: p for p in self._files}, meta)
                self._files = [p for p in entry.iterdir() if p.name != "meta.json"]
            state = "miss" if cache is not None else "off"
            self.metrics["engine_build_s"] = meta["engine_build_s"]
        self.metrics.update(tensorrt_engines=meta["engines"], tensorrt_fallback_ops=meta["fallback_ops"])
        self.tags.update(
            {
                "tensorrt_version": versions["tensorrt"],
                "torch_tensorrt_version": versions["torch_tensorrt"],
                "tensorrt_typing": typing_tag,
                "tensorrt_engine_cache": state,
                "tensorrt_cache_key": key,
                "tensorrt_fallback_op_kinds": ",".join(meta["fallback_op_kinds"]) or "none",
            }
        )
        if meta["fallback_ops"]:
            kinds = ", ".join(meta["fallback_op_kinds"])
            log.warning("TensorRT left %d operators to PyTorch: %s", meta["fallback_ops"], kinds)
        return module

    def _save(self, module: Any, example: torch.Tensor, torch_tensorrt: Any) -> list[Path]:
        """The torch-tensorrt program (exported-program format) and each engine's serialized bytes."""
        scratch = self.scratch()  # removed by close(), cached or not
        path = scratch / "program.ep"
        operator.attrgetter(SAVE)(torch_tensorrt)(module, str(path), **save_kwargs(example))
        files = [scratch / "program.ep"]
        engines = [c for _, c in module.named_children() if type(c).__name__ == ENGINE_CLASS]
        for i, child in enumerate(engines):
            engine = getattr(child, ENGINE_BYTES, None)
            if engine:
                (scratch / f"engine_{i}.plan").write_bytes(bytes(engine))
                files.append(scratch / f"engine_{i}.plan")
        return files

    def export(self, out_dir: Path) -> list[Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        return [Path(shutil.copy(p, out_dir / p.name)) for p in self._files]
