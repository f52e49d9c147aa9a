"""ONNX Runtime: the model exported to ONNX (`torch.onnx.export`, the dynamo exporter, from the same
`torch.export` program as the other ahead-of-time backends), run by an `InferenceSession`.

Providers: on a GPU, TensorRT's provider where this onnxruntime has it (`provider: auto`), else CUDA's; on
the CPU, the CPU provider. A GPU job whose onnxruntime has no GPU provider ends `unavailable` (install
`onnxruntime-gpu`), and so does one where the session came up on another provider than the one asked for:
onnxruntime falls back to the CPU silently, and that must never be measured as a GPU figure.

Inputs and outputs are bound to device memory (I/O binding) on the same CUDA stream PyTorch times with, so
no host copy is timed and the CUDA events see the provider's kernels. The `.onnx` file is the artifact.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from src.backends.base import BACKENDS, Backend, CacheDirOption, missing
from src.backends.support.engine_cache import cache_root
from src.backends.support.exporting import export_program
from src.shared.errors import ConfigError, Unavailable, Unsupported

if TYPE_CHECKING:
    import torch

    from src.shared.spec import JobSpec

PROVIDERS = ("auto", "tensorrt", "cuda", "cpu")
NAMES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
INSTALL_HINT = (
    "pip install -e '.[onnx]' (onnx, onnxscript, onnxruntime); on a GPU: pip install onnxruntime-gpu"
)


@BACKENDS.register("onnxruntime")
class OnnxRuntime(Backend):
    precisions = ("fp32", "fp16")  # no bf16 convolution kernels in onnxruntime's CUDA provider
    channels_last = False  # ONNX tensors are dense NCHW: a channels-last buffer would be read wrongly

    @dataclass(frozen=True)
    class Options(CacheDirOption):  # cache_dir: the TensorRT provider's engine cache
        provider: str = (
            "auto"  # auto | tensorrt | cuda | cpu (auto: tensorrt > cuda on a GPU, cpu on the CPU)
        )
        opset: int | None = None  # None: the exporter's default
        optimize: bool = True  # the exporter's graph optimisation (constant folding, ...)

        def __post_init__(self) -> None:
            if self.provider not in PROVIDERS:
                raise ConfigError(
                    f"backend 'onnxruntime': provider '{self.provider}'; allowed: {', '.join(PROVIDERS)}"
                )

    @classmethod
    def version(cls) -> str:
        for dist in ("onnxruntime-gpu", "onnxruntime"):
            try:
                return metadata.version(dist)
            except metadata.PackageNotFoundError:
                continue
        return "not installed"

    @classmethod
    def precheck(cls, job: JobSpec, device_type: str) -> None:
        if why := missing("onnxruntime", "onnxscript"):  # onnxscript: the dynamo ONNX exporter needs it
            raise Unavailable(f"onnxruntime/onnxscript cannot be imported ({why}); {INSTALL_HINT}")
        want = cls.parse_options(job.backend.name, job.backend.options).provider
        if device_type != "cuda" and want not in ("auto", "cpu"):
            raise Unavailable(f"provider '{want}' needs a CUDA GPU; this job runs on {device_type}")
        if device_type == "cuda" and want == "cpu":
            raise Unavailable("provider 'cpu' on a GPU job would time the CPU; use gpu=cpu for that")
        if device_type != "cuda" and job.precision != "fp32":
            why = f"onnxruntime's CPU provider runs these models at fp32 only, not {job.precision}"
            raise Unsupported(why)

    def unavailable(self, device: torch.device) -> str | None:
        try:  # found, but an install can still be broken
            import onnxruntime
            import onnxscript  # noqa: F401
        except Exception as exc:
            return f"onnxruntime/onnxscript cannot be imported ({type(exc).__name__}: {exc}); {INSTALL_HINT}"
        try:
            self._choose(device, onnxruntime.get_available_providers())
        except Unavailable as exc:
            return str(exc)
        return None

    def _choose(self, device: torch.device, available: list[str]) -> str:
        """The provider for a GPU job (`precheck` settled the CPU's and the options' cases)."""
        if device.type != "cuda":
            return NAMES["cpu"]
        want = self.options.provider
        order = ["tensorrt", "cuda"] if want == "auto" else [want]
        for name in order:
            if NAMES[name] in available:
                return NAMES[name]
        wanted = " or ".join(NAMES[n] for n in order)
        raise Unavailable(
            f"this onnxruntime has no {wanted} (it has {', '.join(available)}); install onnxruntime-gpu"
        )

    def _provider_options(self, provider: str, device: torch.device) -> dict[str, Any]:
        import torch

        if provider == NAMES["cpu"]:
            return {}
        options: dict[str, Any] = {"device_id": device.index or 0}
        stream = str(torch.cuda.current_stream(device).cuda_stream)
        if provider == NAMES["cuda"]:
            options.update(user_compute_stream=stream, cudnn_conv_use_max_workspace="1")
            if self.job.tf32 is False:
                options["use_tf32"] = "0"
        else:
            folder = cache_root(self.options.cache_dir) / "onnxruntime-tensorrt"
            folder.mkdir(parents=True, exist_ok=True)
            fp16 = self.job.precision == "fp16"
            options.update(
                user_compute_stream=stream,
                trt_fp16_enable=str(fp16),
                trt_engine_cache_enable="True",
                trt_engine_cache_path=str(folder),
            )
        return options

    def prepare(self, model: torch.nn.Module, example: torch.Tensor) -> Callable[[torch.Tensor], Any]:
        import onnxruntime as ort
        import torch

        provider = self._choose(example.device, ort.get_available_providers())
        program, self.metrics["export_s"] = export_program(model, example)
        self._onnx = self.scratch() / "model.onnx"
        start = time.perf_counter()
        onnx_program = torch.onnx.export(
            program,
            (example,),
            str(self._onnx),
            dynamo=True,
            external_data=False,
            optimize=self.options.optimize,
            opset_version=self.options.opset,
            verbose=False,
        )
        opset = onnx_program.model.opset_imports.get("", "?") if onnx_program is not None else "?"
        self.metrics["onnx_export_s"] = time.perf_counter() - start
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        start = time.perf_counter()
        session = ort.InferenceSession(
            str(self._onnx),
            so,
            providers=[provider],
            provider_options=[self._provider_options(provider, example.device)],
        )
        self.metrics["session_create_s"] = time.perf_counter() - start
        used = session.get_providers()[0]
        if used != provider:
            raise Unavailable(
                f"onnxruntime came up on {used}, not {provider} (a missing CUDA/cuDNN library?)"
            )
        self.tags.update(onnxruntime_provider=used, onnx_opset=str(opset))
        return _bound_call(session, example)

    def export(self, out_dir: Path) -> list[Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        return [Path(shutil.copy(self._onnx, out_dir / self._onnx.name))]


ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int64)": "int64"}


def _bound_call(session: Any, example: torch.Tensor) -> Callable[[torch.Tensor], Any]:
    """A callable running the session on device-resident tensors: inputs and outputs bound by address."""
    import numpy as np
    import torch

    device = example.device
    kind, index = ("cuda", device.index or 0) if device.type == "cuda" else ("cpu", 0)
    binding = session.io_binding()
    outputs = []
    for out in session.get_outputs():
        dtype = ORT_TYPES[out.type]
        tensor = torch.empty(out.shape, dtype=getattr(torch, dtype), device=device)
        binding.bind_output(out.name, kind, index, np.dtype(dtype), tuple(tensor.shape), tensor.data_ptr())
        outputs.append(tensor)
    name = session.get_inputs()[0].name
    bound: list[int] = []

    def run(x: torch.Tensor) -> Any:
        if not bound or bound[0] != x.data_ptr():
            x = x.contiguous()
            binding.bind_input(
                name, kind, index, np.dtype(str(x.dtype).removeprefix("torch.")), tuple(x.shape), x.data_ptr()
            )
            bound[:] = [x.data_ptr()]
            run.keep = x  # the bound buffer must outlive the binding
        session.run_with_iobinding(binding)
        return outputs[0] if len(outputs) == 1 else outputs

    return run
