"""The typed, validated description of one job, shared by the Hydra process and the measuring child."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

PRECISIONS = ("fp32", "fp16", "bf16")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    variant: str
    input_shape: tuple[int, ...]  # one sample, without the batch dimension
    weights: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BackendSpec:
    name: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MeasureSpec:
    warmup_iters: int = 5
    min_iters: int = 20
    min_duration_s: float = 3.0
    timeout_s: float = 1200.0
    seed: int = 0
    cudnn_benchmark: bool = True
    parity_samples: int = 2


@dataclass(frozen=True)
class GpuSpec:
    index: str = "auto"  # "auto", "any", "cpu" or a CUDA device index
    name: str | None = None  # a preset's card name, e.g. "NVIDIA L4"
    match: str | None = None  # the text the detected card's name must contain for a preset to apply
    memory_gib: float | None = None
    nameplate_w: float | None = None  # the card's rated power, as the study states it


@dataclass(frozen=True)
class TelemetrySpec:
    sample_hz: float = 10.0  # power/clock trace, sampled by the launching process; 0: off
    idle_s: float = 1.0  # idle power is read for this long before each job
    energy_min_window_s: float = 1.0  # the timed window is stretched to at least this when energy is read
    lock: bool = True  # one measuring job per device at a time


@dataclass(frozen=True)
class JobSpec:
    model: ModelSpec
    backend: BackendSpec
    precision: str
    batch_size: int
    gpu: GpuSpec
    tf32: bool | None = None  # None: PyTorch's defaults (TF32 convolutions on, TF32 matmul off)
    channels_last: bool = False
    smoke: bool = False
    measure: MeasureSpec = field(default_factory=MeasureSpec)
    telemetry: TelemetrySpec = field(default_factory=TelemetrySpec)
    plugins: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        precision = {None: self.precision, True: "tf32", False: "fp32-notf32"}[self.tf32]
        layout = "-cl" if self.channels_last else ""
        return f"{self.model.name}-{self.backend.name}-{precision}{layout}-bs{self.batch_size}"

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return (self.batch_size, *self.model.input_shape)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> JobSpec:
        m = dict(d["model"])
        m["input_shape"] = tuple(m["input_shape"])
        nested = {
            "model": ModelSpec(**m),
            "backend": BackendSpec(**d["backend"]),
            "gpu": GpuSpec(**d["gpu"]),
            "measure": MeasureSpec(**d["measure"]),
            "telemetry": TelemetrySpec(**d["telemetry"]),
            "plugins": tuple(d.get("plugins", ())),
        }
        return cls(**nested, **{k: v for k, v in d.items() if k not in nested})

    @classmethod
    def from_json(cls, text: str) -> JobSpec:
        return cls.from_dict(json.loads(text))

    def params(self) -> dict[str, str]:
        """Flat MLflow params: what was asked for (the device actually used is logged by the child)."""
        p = {
            "model": self.model.name,
            "variant": self.model.variant,
            "input_shape": "x".join(map(str, self.model.input_shape)),
            "weights": self.model.weights or "random",
            "backend": self.backend.name,
            "precision": self.precision,
            "tf32": "default" if self.tf32 is None else str(self.tf32).lower(),
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
