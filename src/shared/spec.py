"""Every setting of a job, declared once: the config sections (Hydra's schema for `conf/`, see
`src/parent/config.py`) and the `JobSpec` the measuring child receives are the same dataclasses.

Each section validates itself in `__post_init__` (run by `OmegaConf.to_object`, and again when the child
rebuilds its spec from JSON), raising `ConfigError` with a message that names what is allowed. The field
comments are the documentation of the defaults; `conf/config.yaml` holds only the defaults list.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from src.shared.errors import ConfigError

MISSING: Any = "???"  # OmegaConf's marker for a value a config group must set
PRECISIONS = ("fp32", "fp16", "bf16")
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
# Parity tolerance on the relative L2 error, by the arithmetic a job asked for (docs/metrics.md says why).
TOLERANCE_REL_L2 = {"fp32": 1e-4, "tf32": 1e-2, "fp16": 2e-2, "bf16": 8e-2}
# Backend options that change the compiled code, named after the mode in a run's name and the report's
# configuration ("compile fp16 CL reduce-overhead+freezing")
NAMED_FLAGS = {
    "max_autotune": "max-autotune",
    "freezing": "freezing",
    "coordinate_descent": "coordinate-descent",
    "gn_channel_stats": "gn-channel-stats",
}


def variant(options: dict[str, Any]) -> str:
    """A backend's mode and named flags as one word: "" (default), "max-autotune", "default+freezing".
    `options` may be the job's (values) or a run's params (strings)."""
    flags = [name for key, name in NAMED_FLAGS.items() if str(options.get(key)).lower() == "true"]
    mode = str(options.get("mode") or "default")
    if mode in ("-", "nan", "None"):
        mode = "default"
    return "" if mode == "default" and not flags else "+".join([mode, *flags])


def _raise(problems: list[str]) -> None:
    if problems:
        raise ConfigError("; ".join(problems))


def _not_finite(section: str, obj: Any) -> list[str]:
    """Every float setting must be a finite number: nan or inf would mean no timeout, or no end."""
    return [
        f"{section}.{f.name} must be a finite number, got {value}"
        for f in fields(obj)
        if isinstance(value := getattr(obj, f.name), float) and not math.isfinite(value)
    ]


@dataclass
class ModelConfig:
    name: str = MISSING
    variant: str = MISSING
    input_shape: list[int] = MISSING  # one sample, without the batch dimension (a tuple once validated)
    smoke_input_shape: list[int] = MISSING  # used instead when smoke=true (CPU tests, pipeline checks)
    study_batch_sizes: list[int] = field(default_factory=list)  # the study's; batch_index picks one
    weights: str | None = None  # a local file; null: random initialisation
    options: dict[str, Any] = field(default_factory=dict)  # the model's Options dataclass (src/models)

    def __post_init__(self) -> None:
        self.input_shape = tuple(self.input_shape)
        self.smoke_input_shape = tuple(self.smoke_input_shape)
        self.study_batch_sizes = list(self.study_batch_sizes)
        self.options = dict(self.options)

    def identity(self) -> dict[str, Any]:
        """What defines the network and its input (resume keys, engine-cache keys)."""
        keep = ("name", "variant", "input_shape", "weights", "options")
        return {k: v for k, v in asdict(self).items() if k in keep}


@dataclass
class BackendConfig:
    name: str = MISSING
    options: dict[str, Any] = field(default_factory=dict)  # the backend's Options dataclass (src/backends)

    def __post_init__(self) -> None:
        self.options = dict(self.options)


@dataclass
class Precision:
    """The one resolver of the precision vocabulary: storage dtype, TF32 switches, parity class, label."""

    name: str = MISSING  # fp32 | fp16 | bf16
    tf32: bool | None = None  # fp32 only; null keeps PyTorch's defaults (TF32 convs on, matmul off)

    def __post_init__(self) -> None:
        problems = []
        if self.name not in PRECISIONS:
            problems.append(f"unknown precision '{self.name}'; allowed: {', '.join(PRECISIONS)}")
        elif self.tf32 is not None and self.name != "fp32":
            problems.append(f"precision.tf32 applies to fp32 only, not {self.name}")
        _raise(problems)

    @property
    def dtype_name(self) -> str:
        """The torch dtype's attribute name (`getattr(torch, ...)`)."""
        return DTYPES[self.name]

    @property
    def label(self) -> str:
        """fp32, tf32 (forced on), fp32-notf32 (forced off), fp16, bf16."""
        return {None: self.name, True: "tf32", False: "fp32-notf32"}[self.tf32]

    def arithmetic(self, device_type: str) -> str:
        """The parity class: fp32, tf32, fp16 or bf16 (TF32 exists only on a GPU; None keeps its default)."""
        if self.name != "fp32":
            return self.name
        return "fp32" if device_type != "cuda" or self.tf32 is False else "tf32"

    def tolerance_rel_l2(self, device_type: str) -> float:
        return TOLERANCE_REL_L2[self.arithmetic(device_type)]

    @staticmethod
    def tf32_param(tf32: bool | None) -> str:
        """The MLflow param `tf32`: default, true or false."""
        return "default" if tf32 is None else str(tf32).lower()

    @classmethod
    def from_params(cls, precision: str, tf32: str) -> Precision:
        """Back from the MLflow params `precision` and `tf32` (the report)."""
        return cls(precision, {"default": None, "true": True, "false": False}[tf32])


@dataclass
class GpuConfig:
    """The device request, parsed once: auto | any | cpu | a CUDA index, with an optional card preset."""

    index: str = (
        "auto"  # auto: the first GPU, else the CPU | any: a free GPU | cpu | a CUDA index (0, 1, ...)
    )
    name: str | None = None  # presets: the card's name, e.g. "NVIDIA L4"
    match: str | None = None  # presets: text the detected card's name must contain for the preset to apply
    memory_gib: float | None = None
    nameplate_w: float | None = None  # presets: rated power as the study states it; auto: NVML's limit
    usd_per_hour: float | None = (
        None  # the card's hourly price, where a user sets it (cost.usd_per_hour wins)
    )

    def __post_init__(self) -> None:
        self.index = str(self.index)
        problems = _not_finite("gpu", self)
        if self.index not in ("auto", "any", "cpu") and not self.index.isdigit():
            problems.append(
                f"gpu '{self.index}' is not allowed; "
                "allowed: auto, any, cpu, or a CUDA device index (0, 1, ...)"
            )
        if self.usd_per_hour is not None and not self.usd_per_hour > 0:
            problems.append(f"gpu.usd_per_hour must be > 0, or null, got {self.usd_per_hour}")
        if self.index == "cpu" and self.name:
            problems.append(f"gpu preset '{self.name}' cannot run on the CPU (gpu.index=cpu)")
        _raise(problems)

    @property
    def is_any(self) -> bool:
        """`gpu=any`: the runner claims a free GPU and gives the job its index (`claimed`)."""
        return self.index == "any"

    @property
    def cpu_fallback(self) -> bool:
        """Runs on the CPU where no GPU is found (cpu, auto)."""
        return self.index in ("cpu", "auto")

    @property
    def position(self) -> int | None:
        """The CUDA index asked for: None for cpu (and any, until claimed), 0 for auto."""
        if self.index in ("cpu", "any"):
            return None
        return 0 if self.index == "auto" else int(self.index)

    def claimed(self, position: int | None) -> GpuConfig:
        """The request once a device is chosen for `gpu=any` (None: the CPU)."""
        return replace(self, index="cpu" if position is None else str(position))


STOP_RULES = ("ci", "fixed")


@dataclass
class MeasureConfig:
    warmup_iters: int = 5  # untimed calls after the first call (ci: at most; ends once two calls agree)
    warmup_agree_pct: float = 5.0  # ci: two successive warm-up calls within this % of each other
    stop: str = "ci"  # when timing ends (src/child/measure.py): ci (the mean is known) | fixed (counts)
    repeats: int = 3  # timed windows after one build; their spread is `throughput_spread_pct`
    min_iters: int = 5  # fixed: per window; ci: in all, and the loop lasts at least repeats x min_duration_s
    min_duration_s: float = 1.0
    ci_pct: float = 1.0  # ci: stop once the 95% confidence half-width of the mean is within this % of it
    max_duration_s: float = 10.0  # ci: stop here (after 2 iterations at least) even if the mean is not known
    timeout_s: float = 1200.0  # per job, from process start to result (build included); killed past it
    seed: int = 0  # input and random-weight seed
    cudnn_benchmark: bool = True  # torch.backends.cudnn.benchmark
    parity_samples: int = 2  # samples compared with the eager fp32 model (src/child/parity.py); 0: no check
    profile: bool = False  # after the timed loop, profile a short window: where the time goes (profile.py)
    profile_calls: int = 10  # model calls in that window
    memory_limit_gib: float | None = None  # the most the job may allocate (out of memory past it): on a
    # GPU, PyTorch's caching allocator's cap; on the CPU, beyond what the process held as it started

    def __post_init__(self) -> None:
        _raise(_not_finite("measure", self))
        problems = []
        if self.stop not in STOP_RULES:
            problems.append(f"measure.stop '{self.stop}' is not allowed; allowed: {', '.join(STOP_RULES)}")
        if not 0 < self.ci_pct <= 100:
            problems.append(f"measure.ci_pct must be in (0, 100], got {self.ci_pct}")
        if self.warmup_agree_pct <= 0:
            problems.append(f"measure.warmup_agree_pct must be > 0, got {self.warmup_agree_pct}")
        if self.stop == "ci" and self.max_duration_s < self.repeats * self.min_duration_s:
            problems.append(
                f"measure.max_duration_s ({self.max_duration_s:g}) must be >= repeats x min_duration_s "
                f"({self.repeats} x {self.min_duration_s:g})"
            )
        if self.warmup_iters < 0:
            problems.append(f"measure.warmup_iters must be >= 0, got {self.warmup_iters}")
        if self.repeats < 1:
            problems.append(f"measure.repeats must be >= 1 (timed windows per job), got {self.repeats}")
        if self.min_iters < 1:
            problems.append(f"measure.min_iters must be >= 1, got {self.min_iters}")
        if self.min_duration_s < 0:
            problems.append(f"measure.min_duration_s must be >= 0, got {self.min_duration_s}")
        if self.parity_samples < 0:
            problems.append(
                f"measure.parity_samples must be >= 0 (0: no parity check), got {self.parity_samples}"
            )
        if self.profile_calls < 1:
            problems.append(f"measure.profile_calls must be >= 1, got {self.profile_calls}")
        if self.memory_limit_gib is not None and not self.memory_limit_gib > 0:
            problems.append(f"measure.memory_limit_gib must be > 0, or null, got {self.memory_limit_gib}")
        if self.timeout_s <= 0:
            problems.append(f"measure.timeout_s must be > 0, got {self.timeout_s}")
        _raise(problems)


@dataclass
class TelemetryConfig:
    sample_hz: float = 10.0  # power/clock/utilisation trace, sampled by the launching process; 0: off
    idle_s: float = 1.0  # idle power is read for this long (0: not read)
    idle_once: bool = True  # once per GPU per launching process, before its first job there; false: each job
    energy_min_window_s: float = 1.0  # with an energy counter, the timed window lasts at least this long
    lock: bool = True  # one measuring job per device at a time, whatever launched it (file lock)

    def __post_init__(self) -> None:
        _raise(_not_finite("telemetry", self))
        problems = []
        if not 0 <= self.sample_hz <= 100:
            problems.append(f"telemetry.sample_hz must be between 0 (off) and 100, got {self.sample_hz}")
        if self.idle_s < 0 or self.energy_min_window_s < 0:
            problems.append("telemetry.idle_s and telemetry.energy_min_window_s must be >= 0")
        _raise(problems)


@dataclass(frozen=True)
class JobSpec:
    """One validated job: what the Hydra process hands the measuring child (as JSON)."""

    model: ModelConfig
    backend: BackendConfig
    precision: str
    batch_size: int
    gpu: GpuConfig
    tf32: bool | None = None  # None: PyTorch's defaults (TF32 convolutions on, TF32 matmul off)
    channels_last: bool = False
    smoke: bool = False
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    plugins: tuple[str, ...] = ()

    @property
    def numerics(self) -> Precision:
        return Precision(self.precision, self.tf32)

    @property
    def label(self) -> str:
        layout = "-cl" if self.channels_last else ""
        mode = variant(self.backend.options)
        mode = f"-{mode}" if mode else ""
        return (
            f"{self.model.name}-{self.backend.name}{mode}-{self.numerics.label}{layout}-bs{self.batch_size}"
        )

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return (self.batch_size, *self.model.input_shape)

    def with_gpu(self, gpu: GpuConfig) -> JobSpec:
        return replace(self, gpu=gpu)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> JobSpec:
        sections = {"model": ModelConfig, "backend": BackendConfig, "gpu": GpuConfig}
        sections.update(measure=MeasureConfig, telemetry=TelemetryConfig)
        nested = {k: kind(**d[k]) for k, kind in sections.items()}
        rest = {f.name: d[f.name] for f in fields(cls) if f.name not in nested and f.name in d}
        rest["plugins"] = tuple(rest.get("plugins", ()))
        return cls(**nested, **rest)

    @classmethod
    def from_json(cls, text: str) -> JobSpec:
        return cls.from_dict(json.loads(text))

    def key_dict(self) -> dict[str, Any]:
        """What makes two jobs the same measurement (the per-job timeout only changes when it is killed)."""
        job = self.to_dict()
        job["model"] = self.model.identity()
        job["measure"].pop("timeout_s", None)
        job["gpu"].pop("usd_per_hour", None)  # a price, not part of the measurement
        return job

    def params(self) -> dict[str, str]:
        """Flat MLflow params: what was asked for (the device actually used is logged by the child)."""
        p = {
            "model": self.model.name,
            "variant": self.model.variant,
            "input_shape": "x".join(map(str, self.model.input_shape)),
            "weights": self.model.weights or "random",
            "backend": self.backend.name,
            "precision": self.precision,
            "tf32": Precision.tf32_param(self.tf32),
            "channels_last": str(self.channels_last).lower(),
            "batch_size": str(self.batch_size),
            "gpu": self.gpu.index,
            "gpu_preset": self.gpu.name or "none",
            "smoke": str(self.smoke).lower(),
        }
        p.update({f"model.{k}": _flat(v) for k, v in sorted(self.model.options.items())})
        p.update({f"backend.{k}": _flat(v) for k, v in sorted(self.backend.options.items())})
        p.update({f"measure.{k}": _flat(v) for k, v in sorted(asdict(self.measure).items())})
        p.update({f"telemetry.{k}": _flat(v) for k, v in sorted(asdict(self.telemetry).items())})
        return p


def _flat(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)
