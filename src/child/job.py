"""What the measuring child does for one job: build, place, prepare, time, export.

Runs in a fresh process (`src/child/worker.py`, launched by `src/parent/launch.py`); reports through a
`ProgressWriter` (`src/shared/progress.py`) as it goes.
"""

from __future__ import annotations

import csv
import importlib
import re
import resource
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from src.backends import BACKENDS, Backend
from src.child import energy, flops, parity
from src.child.measure import stop_rule, summarize, synchronize, time_single_call_ms, timed_loop
from src.child.profile import profile
from src.models import MODELS, ModelDef
from src.shared.envinfo import device_tags
from src.shared.errors import Unavailable, Unsupported, is_out_of_memory
from src.shared.peaks import peak_tflops
from src.shared.progress import ARTIFACTS, ProgressWriter
from src.shared.registry import load_plugins
from src.shared.results import JOB, STOP, Compute, Cost
from src.shared.spec import GpuConfig, JobSpec

if TYPE_CHECKING:
    import torch


def resolve_device(gpu: GpuConfig | str) -> torch.device:
    """`auto`: the first CUDA GPU, else the CPU; `cpu`; or a CUDA index that must exist. A string is a
    `gpu.index` value (parsed by `GpuConfig`)."""
    import torch

    gpu = GpuConfig(index=gpu) if isinstance(gpu, str) else gpu
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpu.position is None or (gpu.cpu_fallback and count == 0):
        return torch.device("cpu")
    if gpu.position >= count:
        visible = f"indices 0..{count - 1}" if count else "none; use gpu=cpu or gpu=auto"
        raise Unavailable(
            f"GPU {gpu.position} was asked for but this host has {count} CUDA device(s) ({visible})"
        )
    return torch.device("cuda", gpu.position)


def check_preset(gpu: GpuConfig, device: torch.device, name: str) -> None:
    """A card preset (gpu=l4, ...) only applies to such a card: anything else would mislabel the figures."""
    if gpu.match and (device.type != "cuda" or not re.search(gpu.match, name)):
        raise Unavailable(
            f"gpu preset '{gpu.name}' needs a card whose name matches '{gpu.match}'; {device} is {name}"
        )


def configure_torch(spec: JobSpec, device: torch.device) -> dict[str, str]:
    import torch

    torch.manual_seed(spec.measure.seed)
    if device.type == "cuda":
        # the job's GPU becomes the current one: what captures or launches on "the current device" (CUDA
        # graph capture, a stream made without a device) then uses it, not GPU 0
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = spec.measure.cudnn_benchmark
        if spec.numerics.tf32 is not None:
            torch.backends.cudnn.allow_tf32 = spec.numerics.tf32
            torch.backends.cuda.matmul.allow_tf32 = spec.numerics.tf32
    return {
        "cudnn_benchmark": str(torch.backends.cudnn.benchmark).lower(),
        "cudnn_allow_tf32": str(torch.backends.cudnn.allow_tf32).lower(),
        "matmul_allow_tf32": str(torch.backends.cuda.matmul.allow_tf32).lower(),
    }


def limit_memory(gib: float, device: torch.device) -> dict[str, str]:
    """Cap what the job may allocate: on a GPU, a fraction of the card for PyTorch's caching allocator
    (past it, torch.OutOfMemoryError); on the CPU, the process's data segment (RLIMIT_DATA) at what it
    holds now plus `gib` (past it, the allocator's "can't allocate memory")."""
    import torch

    limit = int(gib * 2**30)
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, limit / total), device)
        return {"memory_limit": f"{gib:g} GiB of {total / 2**30:.0f} GiB (caching allocator)"}
    status = Path("/proc/self/status").read_text()
    held = int(re.search(r"VmData:\s+(\d+) kB", status).group(1)) * 1024  # type: ignore[union-attr]
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    soft = held + limit if hard == resource.RLIM_INFINITY else min(hard, held + limit)
    resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))
    return {"memory_limit": f"{gib:g} GiB beyond {held / 2**30:.2f} GiB held (RLIMIT_DATA)"}


def make_input(spec: JobSpec, device: torch.device) -> torch.Tensor:
    """The job's input batch at its precision: the same values for the same seed, every time."""
    import torch

    generator = torch.Generator(device=device).manual_seed(spec.measure.seed)
    return torch.randn(spec.batch_shape, generator=generator, device=device, dtype=_dtype(spec))


def _dtype(spec: JobSpec) -> torch.dtype:
    import torch

    return getattr(torch, spec.numerics.dtype_name)


def place(
    model: torch.nn.Module, spec: JobSpec, device: torch.device
) -> tuple[torch.nn.Module, torch.Tensor]:
    """Precision and memory layout, applied in this one place for every backend."""
    import torch

    x = make_input(spec, device)
    model = model.requires_grad_(False).to(device=device, dtype=_dtype(spec))
    if spec.channels_last:
        fmt = {4: torch.channels_last, 5: torch.channels_last_3d}.get(x.dim())
        if fmt is None:
            raise Unsupported(f"channels_last needs a 4D or 5D input, got {x.dim()}D")
        model, x = model.to(memory_format=fmt), x.contiguous(memory_format=fmt)
    return model, x


def _parity_reference(
    model: torch.nn.Module, spec: JobSpec, device: torch.device, progress: ProgressWriter
) -> torch.Tensor | None:
    """The eager fp32 output for the first samples of the job's input, computed and freed before the
    job's own model is placed (so it weighs on no measurement), or None when the check is off."""
    samples = min(spec.measure.parity_samples, spec.batch_size)
    if samples == 0:
        progress.tags({"parity": "off"})
        return None
    progress.phase("parity_reference")
    try:
        ref = parity.reference(model, make_input(spec, device)[:samples], samples)
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        ref = None  # the fp32 reference does not fit beside nothing else: measure the job all the same
        progress.tags(
            {"parity": "error", "parity_error": f"the fp32 reference ran out of memory: {exc}"[:500]}
        )
    if device.type == "cuda":
        import torch

        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    return ref


def _check_parity(
    output: object, ref: torch.Tensor, spec: JobSpec, device: torch.device, progress: ProgressWriter
) -> None:
    """A failed comparison marks the job (`parity=fail`/`error`); its timing is kept either way."""
    try:
        result = parity.compare(output, ref, spec.numerics.arithmetic(device.type))
    except Exception as exc:
        progress.tags({"parity": "error", "parity_error": f"{type(exc).__name__}: {exc}"[:500]})
        return
    progress.result(result)


def memory_metrics(device: torch.device) -> dict[str, float]:
    metrics = {JOB.peak_rss_mib: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # KiB on Linux
    if device.type == "cuda":
        import torch

        metrics[JOB.peak_mem_allocated_mib] = torch.cuda.max_memory_allocated(device) / 2**20
        metrics[JOB.peak_mem_reserved_mib] = torch.cuda.max_memory_reserved(device) / 2**20
    return metrics


def execute(spec: JobSpec, job_dir: Path, progress: ProgressWriter, started: float | None = None) -> None:
    """The job, reported through `progress`; `started`: when the child's code began (`perf_counter`), from
    which `setup_s` counts (else from here)."""
    started = time.perf_counter() if started is None else started
    progress.phase("setup")
    load_plugins(spec.plugins)
    model_def = MODELS.get(spec.model.name)
    backend_cls = BACKENDS.get(spec.backend.name)
    backend = backend_cls(backend_cls.parse_options(spec.backend.name, spec.backend.options), spec)
    import torch

    device = resolve_device(spec.gpu)
    progress.params({JOB.device: str(device)})
    tags = device_tags(device)
    progress.tags({**tags, "backend_version": backend_cls.version(), JOB.task: model_def.task})
    check_preset(spec.gpu, device, tags[JOB.gpu_name])
    backend_cls.precheck(spec, device.type)  # what the Hydra process decides too, where it can
    missing = backend.unavailable(device)
    if missing:
        raise Unavailable(missing)
    why = backend.supports(spec.model, device)
    if why:
        raise Unsupported(why)
    progress.tags(configure_torch(spec, device))
    if spec.measure.memory_limit_gib is not None:
        progress.tags(limit_memory(spec.measure.memory_limit_gib, device))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    progress.metrics({JOB.setup_s: time.perf_counter() - started})
    try:
        _build_and_measure(spec, model_def, backend, device, job_dir / ARTIFACTS, progress)
    finally:
        backend.close()  # its scratch folders go, whether or not it got as far as exporting
        progress.metrics(memory_metrics(device))


def _build_and_measure(
    spec: JobSpec,
    model_def: type[ModelDef],
    backend: Backend,
    device: torch.device,
    out: Path,
    progress: ProgressWriter,
) -> None:
    import torch

    progress.phase("build_model")
    start = time.perf_counter()
    try:
        model = model_def.build(spec.model)
    except ImportError as exc:
        raise Unavailable(f"missing Python package '{exc.name}' (pip install {exc.name}): {exc}") from exc
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    ref = _parity_reference(model, spec, device, progress)
    progress.metrics({JOB.parity_reference_s: time.perf_counter() - start})
    progress.phase("place_model")
    start = time.perf_counter()
    model, x = place(model, spec, device)
    synchronize(device)
    progress.metrics({JOB.model_load_s: load_s + time.perf_counter() - start})

    progress.phase("import_backend")
    for name in type(backend).imports:  # its libraries (Dynamo, Inductor): imported, not built
        importlib.import_module(name)
    progress.phase("compile")
    start = time.perf_counter()
    fn = backend.prepare(model, x)
    synchronize(device)
    progress.metrics({**backend.metrics, JOB.build_time_s: time.perf_counter() - start})
    progress.tags(backend.tags)

    meter, no_meter = energy.open_meter(device.type, device.index if device.type == "cuda" else None)
    m = spec.measure
    # the energy window spans every timed window: together they last at least energy_min_window_s
    min_window = max(m.min_duration_s, spec.telemetry.energy_min_window_s / m.repeats if meter else 0.0)
    with torch.inference_mode():
        progress.phase("first_call")
        first_ms = time_single_call_ms(fn, x, device)
        progress.metrics({JOB.first_call_ms: first_ms})
        progress.phase("measure")
        loop = replace(m, min_duration_s=min_window)
        timing = timed_loop(fn, x, device, loop, edge=energy.edge_reader(meter), first_ms=first_ms)
        progress.tags({STOP.stop_rule: stop_rule(loop), STOP.stop_reason: timing.stop_reason})
        if ref is not None:  # the last timed call's output: the same input, no extra call
            _check_parity(timing.output, ref, spec, device, progress)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "latencies_ms.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["iteration", "latency_ms"])
        writer.writerows(enumerate(timing.latencies_ms))
    stats = summarize(timing, spec.batch_size)
    progress.result(stats)
    images = stats.iterations * spec.batch_size
    progress.result(energy.energy_window(meter, timing.edges, timing.window_s, images, no_meter))
    progress.result(energy.nameplate(spec.gpu, meter, stats.throughput_img_s))
    progress.phase("count_flops")  # after the figures: one eager call on one image, or the cached count
    try:
        with torch.inference_mode():
            gflop, cached = flops.gflop_per_image(model, x, spec)
        progress.tags({"flops_counted": "cached" if cached else "counted"})
        card = torch.cuda.get_device_name(device) if device.type == "cuda" else ""
        peak = peak_tflops(card, spec.numerics.arithmetic(device.type)) if card else None
        progress.result(Compute(gflop, stats.throughput_img_s, *(peak or (None, ""))))
    except Exception as exc:  # a count is an extra: the job's figures are already logged
        progress.tags({"flops_counted": f"error: {type(exc).__name__}: {exc}"[:500]})
    if spec.gpu.usd_per_hour:
        progress.result(Cost(spec.gpu.usd_per_hour, stats.throughput_img_s))
    if m.profile:  # after the figures are logged: the profiled window cannot change or lose them
        progress.phase("profile")
        try:
            with torch.inference_mode():
                progress.result(profile(fn, x, device, m.profile_calls, out / "profile_kernels.csv"))
        except Exception as exc:  # an extra: its failure (out of memory included) is a tag, not the job's
            progress.tags({"profile_error": f"{type(exc).__name__}: {exc}"[:500]})

    backend.finish()
    progress.metrics(backend.metrics)
    progress.tags(backend.tags)

    progress.phase("export")
    files = backend.export(out / "engine")
    if files:
        progress.metrics({JOB.artifact_size_mib: sum(f.stat().st_size for f in files) / 2**20})
        progress.tags({JOB.artifact_files: ",".join(f.name for f in files)})
