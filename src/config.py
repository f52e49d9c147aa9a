"""The configuration schema (registered with Hydra's ConfigStore) and its validation into a `JobSpec`.

YAML in `conf/` is merged onto these dataclasses, so a misspelt key or a wrong type fails at composition.
`to_spec` then checks what types cannot: names against the registries, positive sizes, input shapes the
model can take, precisions the backend can run. Every refusal names what is allowed, and happens before
any model is built or any MLflow state is written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from src.backends import BACKENDS
from src.errors import ConfigError
from src.models import MODELS
from src.registry import load_plugins
from src.spec import PRECISIONS, BackendSpec, GpuSpec, JobSpec, MeasureSpec, ModelSpec, TelemetrySpec


@dataclass
class ModelConfig:
    name: str = MISSING
    variant: str = MISSING
    input_shape: list[int] = MISSING  # one sample, without the batch dimension
    smoke_input_shape: list[int] = MISSING  # used instead when smoke=true (CPU tests, pipeline checks)
    study_batch_sizes: list[int] = field(default_factory=list)  # the study's; batch_index picks one
    weights: str | None = None  # a local file; null: random initialisation
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class BackendConfig:
    name: str = MISSING
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class PrecisionConfig:
    name: str = MISSING
    tf32: bool | None = None  # fp32 only; null keeps PyTorch's defaults


@dataclass
class GpuConfig:
    index: str = "auto"  # auto | any | cpu | a CUDA device index
    name: str | None = None  # presets: the card's name
    match: str | None = None  # presets: text the detected card's name must contain
    memory_gib: float | None = None
    nameplate_w: float | None = None  # presets: rated power as the study states it; auto: NVML's limit


@dataclass
class MeasureConfig:
    warmup_iters: int = 5
    min_iters: int = 20
    min_duration_s: float = 3.0
    timeout_s: float = 1200.0  # per job, build included; the child is killed past it
    seed: int = 0
    cudnn_benchmark: bool = True
    parity_samples: int = 2  # samples compared with the eager fp32 model (src/parity.py); 0: no check


@dataclass
class TelemetryConfig:
    sample_hz: float = 10.0
    idle_s: float = 1.0
    energy_min_window_s: float = 1.0
    lock: bool = True


@dataclass
class TrackingConfig:
    uri: str | None = None  # null: $MLFLOW_TRACKING_URI, else sqlite in the project's mlruns/
    experiment: str | None = None  # null: the parent run's, $MLFLOW_EXPERIMENT_NAME, else the default
    run_name: str | None = None  # null: <model>-<backend>-<precision>-bs<batch>
    log_engine: bool = True  # log the compiled artifact (TorchScript file, engine, ...)


@dataclass
class BenchConfig:
    model: ModelConfig = MISSING
    backend: BackendConfig = MISSING
    precision: PrecisionConfig = MISSING
    gpu: GpuConfig = MISSING
    batch_size: int = 32
    batch_index: int | None = None  # set: batch_size = model.study_batch_sizes[batch_index]
    channels_last: bool = False
    smoke: bool = False
    force: bool = False  # re-measure jobs that already have an identical finished `ok` run
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    plugins: list[str] = field(default_factory=list)  # extra modules that register models/backends


ConfigStore.instance().store(name="base_config", node=BenchConfig)


def gpu_count() -> int:
    """The GPUs CUDA can see (NVML, honouring CUDA_VISIBLE_DEVICES), at least 1: `${gpu_count:}` in
    conf/hydra/launcher/gpus.yaml runs that many jobs at once."""
    from src import nvml

    try:
        with nvml.session() as nv:
            return max(1, len(nvml.visible_indices(nv)))
    except nvml.NvmlUnavailable:
        return 1


OmegaConf.register_new_resolver("gpu_count", gpu_count, replace=True)


_GPU_INDICES = re.compile(r"^gpu=(\d+(?:,\d+)*)$")


def gpu_shorthand(argv: list[str]) -> list[str]:
    """`gpu=1` / `gpu=0,1` (GPU indices, as nvidia-smi numbers them) mean `gpu.index=...`: Hydra reads a bare
    number as an integer, which cannot name a config file of the `gpu` group."""
    return [_GPU_INDICES.sub(r"gpu.index=\1", a) for a in argv]


def to_spec(cfg: DictConfig) -> JobSpec:
    """Validate a composed config into a JobSpec, or raise ConfigError naming what is allowed."""
    own = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])  # Hydra's node needs its runtime
    c: dict[str, Any] = OmegaConf.to_container(own, resolve=True)  # type: ignore[assignment]
    load_plugins(c.get("plugins") or [])
    m, b, p = c["model"], c["backend"], c["precision"]
    problems: list[str] = []

    batch = c["batch_size"]
    if c.get("batch_index") is not None:
        sizes, i = m.get("study_batch_sizes") or [], c["batch_index"]
        if not 0 <= i < len(sizes):
            allowed = ", ".join(map(str, range(len(sizes)))) or "none (the model lists no study_batch_sizes)"
            raise ConfigError(
                f"batch_index {i} picks none of {m['name']}'s study_batch_sizes; allowed: {allowed}"
            )
        batch = sizes[i]
    if not isinstance(batch, int) or batch <= 0:
        problems.append(f"batch_size must be a positive integer, got {batch}")
    if p["name"] not in PRECISIONS:
        problems.append(f"unknown precision '{p['name']}'; allowed: {', '.join(PRECISIONS)}")
    if p.get("tf32") is not None and p["name"] != "fp32":
        problems.append(f"precision.tf32 applies to fp32 only, not {p['name']}")
    gpu = GpuSpec(**{**c["gpu"], "index": str(c["gpu"]["index"])})
    problems += _gpu_problems(gpu) + _measure_problems(c["measure"]) + _telemetry_problems(c["telemetry"])

    shape = m["smoke_input_shape"] if c["smoke"] else m["input_shape"]
    model = ModelSpec(m["name"], m["variant"], tuple(shape), m.get("weights"), dict(m.get("options") or {}))
    backend = BackendSpec(b["name"], dict(b.get("options") or {}))
    for check in (lambda: MODELS.get(model.name).check(model), lambda: _check_backend(backend, p["name"])):
        try:
            check()
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError("; ".join(problems))
    return JobSpec(
        model=model,
        backend=backend,
        precision=p["name"],
        tf32=p.get("tf32"),
        batch_size=batch,
        gpu=gpu,
        channels_last=bool(c["channels_last"]),
        smoke=bool(c["smoke"]),
        measure=MeasureSpec(**c["measure"]),
        telemetry=TelemetrySpec(**c["telemetry"]),
        plugins=tuple(c.get("plugins") or ()),
    )


def _check_backend(backend: BackendSpec, precision: str) -> None:
    BACKENDS.get(backend.name).parse_options(backend.name, backend.options)


def unsupported_combination(spec: JobSpec) -> str | None:
    """Why the job's backend, by its own declaration, cannot run this precision/layout, or None.

    A single run asking for such a job is refused as bad input; in a sweep (a grid of backends x settings)
    the job is recorded as `unsupported` with this reason, without building anything.
    """
    cls = BACKENDS.get(spec.backend.name)
    name = spec.backend.name
    if spec.precision not in cls.precisions:
        allowed = ", ".join(cls.precisions)
        return f"backend '{name}' cannot run precision '{spec.precision}'; allowed: {allowed}"
    if spec.channels_last and not cls.channels_last:
        return f"backend '{name}' cannot take a channels-last input; allowed: channels_last=false"
    if spec.tf32 is not None and not cls.tf32:
        return f"backend '{name}' does not follow PyTorch's TF32 switches; allowed: precision.tf32=null"
    return None


def _gpu_problems(gpu: GpuSpec) -> list[str]:
    problems = []
    if gpu.index not in ("auto", "any", "cpu") and not gpu.index.isdigit():
        problems.append(
            f"gpu '{gpu.index}' is not allowed; allowed: auto, any, cpu, or a CUDA device index (0, 1, ...)"
        )
    if gpu.index == "cpu" and gpu.name:
        problems.append(f"gpu preset '{gpu.name}' cannot run on the CPU (gpu.index=cpu)")
    return problems


def _telemetry_problems(t: dict[str, Any]) -> list[str]:
    problems = []
    if not 0 <= t["sample_hz"] <= 100:
        problems.append(f"telemetry.sample_hz must be between 0 (off) and 100, got {t['sample_hz']}")
    if t["idle_s"] < 0 or t["energy_min_window_s"] < 0:
        problems.append("telemetry.idle_s and telemetry.energy_min_window_s must be >= 0")
    return problems


def _measure_problems(m: dict[str, Any]) -> list[str]:
    problems = []
    if m["warmup_iters"] < 0:
        problems.append(f"measure.warmup_iters must be >= 0, got {m['warmup_iters']}")
    if m["min_iters"] < 1:
        problems.append(f"measure.min_iters must be >= 1, got {m['min_iters']}")
    if m["min_duration_s"] < 0:
        problems.append(f"measure.min_duration_s must be >= 0, got {m['min_duration_s']}")
    if m["parity_samples"] < 0:
        problems.append(
            f"measure.parity_samples must be >= 0 (0: no parity check), got {m['parity_samples']}"
        )
    if m["timeout_s"] <= 0:
        problems.append(f"measure.timeout_s must be > 0, got {m['timeout_s']}")
    return problems
