"""The root of Hydra's schema (registered with the ConfigStore as `base_config`) and its validation into a
`JobSpec`. The sections are the dataclasses of `src/shared/spec.py`, declared once.

YAML in `conf/` is merged onto the schema, so a misspelt key or a wrong type fails at composition;
`to_spec` then instantiates it with `OmegaConf.to_object`, which runs each section's `__post_init__` and then
`BenchConfig.__post_init__` for what spans sections (names against the registries, input shapes the model
can take, backend options, the study batch). Every refusal names what is allowed, and happens before any
model is built or any MLflow state is written.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from src.backends import BACKENDS
from src.models import MODELS
from src.shared.errors import ConfigError
from src.shared.progress import START_MODES
from src.shared.registry import load_plugins
from src.shared.spec import (
    BackendConfig,
    GpuConfig,
    JobSpec,
    MeasureConfig,
    ModelConfig,
    Precision,
    TelemetryConfig,
)


@dataclass
class TrackingConfig:
    uri: str | None = None  # null: $MLFLOW_TRACKING_URI, else sqlite:///<project>/mlruns/mlflow.db
    experiment: str | None = (
        None  # null: the parent run's, else $MLFLOW_EXPERIMENT_NAME, else inference-bench
    )
    run_name: str | None = None  # null: <model>-<backend>-<precision>-bs<batch>
    log_engine: bool = True  # log the compiled artifact (TorchScript file, engine, .pt2, .onnx)


@dataclass
class ReportConfig:
    at_end: bool = True  # a sweep writes its report (src/report.py) and logs it to its parent run as it ends
    out: str | None = None  # null: <sweep folder>/report
    max_p99_ms: float | None = None  # a latency budget: Best available is the fastest within it, any batch


@dataclass
class SearchConfig:
    budget_s: float | None = None  # the whole sweep's job time, shared by its rows (src/parent/budget.py)


@dataclass
class MaxBatchConfig:
    step: int | None = None  # +experiment=max_batch sweeps it: step k of each configuration's search
    start: int = 1  # the first batch tried; doubled until out of memory or `limit`
    limit: int = 1024  # the largest batch tried
    multiple: int = 1  # past it, the bisection tries multiples of this only (8: tensor-core sizes)

    def __post_init__(self) -> None:
        problems = []
        if self.start < 1 or self.limit < self.start:
            problems.append(
                f"max_batch.start ({self.start}) and max_batch.limit ({self.limit}) must satisfy "
                "1 <= start <= limit"
            )
        if self.multiple < 1:
            problems.append(f"max_batch.multiple must be >= 1, got {self.multiple}")
        if self.step is not None and self.step < 0:
            problems.append(f"max_batch.step must be >= 0, got {self.step}")
        if problems:
            raise ConfigError("; ".join(problems))

    def steps(self) -> int:
        """The most steps a search can take: doubling from `start` to `limit`, then bisecting."""
        doublings = math.ceil(math.log2(self.limit / self.start))
        return doublings + 1 + math.ceil(math.log2(self.limit)) + 1

    def next_batch(self, fits: set[int], oom: set[int]) -> tuple[int | None, str]:
        """The next batch to try, from the batches that fit and those that ran out of memory, or None
        and why the search is over: double from `start` until out of memory (or `limit`), then bisect
        between the largest batch that fits and the smallest that does not."""
        if not fits and not oom:
            return self.start, ""
        hi = min(oom) if oom else None
        lo = max((b for b in fits if hi is None or b < hi), default=0)
        if hi is None:
            if lo >= self.limit:
                return None, f"batch {lo} fits: it is max_batch.limit"
            return min(2 * lo, self.limit), ""
        step = self.multiple if lo >= self.multiple else 1
        if hi - lo <= step:
            if lo == 0:
                return None, f"no batch fits: batch {hi} ran out of memory"
            return None, f"the largest batch that fits is {lo}; {hi} ran out of memory"
        mid = (lo + hi) // 2
        if lo >= self.multiple:
            mid = max(mid - mid % self.multiple, lo + self.multiple)
        return mid, ""


@dataclass
class CostConfig:
    usd_per_hour: float | None = None  # the card's hourly price: usd_per_million_images per run; null: none


DEFAULT_BATCH = 32  # a job's batch size when neither batch_size nor batch_index is given


@dataclass
class BenchConfig:
    model: ModelConfig = MISSING  # conf/model/
    backend: BackendConfig = MISSING  # conf/backend/
    precision: Precision = MISSING  # conf/precision/
    gpu: GpuConfig = MISSING  # conf/gpu/
    batch_size: int | None = None  # null: DEFAULT_BATCH, or the study batch that batch_index picks
    batch_index: int | None = None  # 0, 1, ...: batch_size = model.study_batch_sizes[batch_index]
    channels_last: bool = False  # model and input in channels-last (2D) / channels-last-3d (3D)
    smoke: bool = False  # each model's smoke_input_shape (tiny; for CPU checks, not for comparing)
    force: bool = False  # re-measure jobs that already have an identical finished `ok` run
    progress_every_s: float = 15.0  # a running job's phase is printed at least this often
    child_start: str = "template"  # template: forked by a process that imported torch and the model
    # libraries once, never touching a GPU; fresh: a new interpreter per job (src/parent/launch.py)
    study_column: str | None = None  # set by conf/study/*.yaml: the study's column this job fills (report)
    measure: MeasureConfig = field(default_factory=MeasureConfig)
    telemetry: TelemetryConfig = field(default_factory=TelemetryConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    cost: CostConfig = field(default_factory=CostConfig)
    max_batch: MaxBatchConfig = field(default_factory=MaxBatchConfig)
    plugins: list[str] = field(default_factory=list)  # extra modules that register models/backends

    def __post_init__(self) -> None:
        load_plugins(self.plugins)
        problems: list[str] = []
        if self.max_batch.step is not None:  # the batch is decided as the step starts (max_batch.py)
            if self.batch_index is not None or self.batch_size is not None:
                raise ConfigError(
                    "+experiment=max_batch decides each step's batch size; allowed: no batch_size or "
                    "batch_index (max_batch.start and max_batch.limit bound the search)"
                )
            self.batch_size = self.max_batch.start
        if self.batch_index is not None:
            sizes, i = self.model.study_batch_sizes, self.batch_index
            if not 0 <= i < len(sizes):
                allowed = (
                    ", ".join(map(str, range(len(sizes)))) or "none (the model lists no study_batch_sizes)"
                )
                raise ConfigError(
                    f"batch_index {i} picks none of {self.model.name}'s study_batch_sizes; allowed: {allowed}"
                )
            if self.batch_size is not None and self.batch_size != sizes[i]:
                raise ConfigError(
                    f"batch_size={self.batch_size} and batch_index={i} (batch {sizes[i]} for "
                    f"{self.model.name}) ask for two batch sizes; allowed: one of them, or both naming the "
                    "same batch"
                )
            self.batch_size = sizes[i]
        elif self.batch_size is None:
            self.batch_size = DEFAULT_BATCH
        if self.child_start not in START_MODES:
            problems.append(f"child_start '{self.child_start}'; allowed: {', '.join(START_MODES)}")
        if not self.progress_every_s > 0:
            problems.append(f"progress_every_s must be > 0 seconds, got {self.progress_every_s}")
        if self.cost.usd_per_hour is not None and not self.cost.usd_per_hour > 0:
            problems.append(f"cost.usd_per_hour must be > 0, or null, got {self.cost.usd_per_hour}")
        if self.search.budget_s is not None and not self.search.budget_s > 0:
            problems.append(
                f"search.budget_s must be > 0 seconds, or null (no budget), got {self.search.budget_s}"
            )
        if not isinstance(self.batch_size, int) or self.batch_size <= 0:
            problems.append(f"batch_size must be a positive integer, got {self.batch_size}")
        parsed: dict[str, Any] = {}
        for section, check in (
            ("model", lambda: MODELS.get(self.model.name).check(self.job_model())),
            (
                "backend",
                lambda: BACKENDS.get(self.backend.name).parse_options(
                    self.backend.name, self.backend.options
                ),
            ),
        ):
            try:
                parsed[section] = check()
            except ConfigError as exc:
                problems.append(str(exc))
        if problems:
            raise ConfigError("; ".join(problems))
        # every option with its value, defaults included (declared once: the Options dataclasses), so
        # the job's key, params and spec name what ran whether or not a value was given
        self.model.options = as_settings(parsed["model"])
        self.backend.options = as_settings(parsed["backend"])

    def job_model(self) -> ModelConfig:
        """The model as the job runs it: with smoke=true, its tiny shape is the input shape."""
        return replace(self.model, input_shape=self.model.smoke_input_shape) if self.smoke else self.model

    def parent_settings(self) -> ParentSettings:
        return ParentSettings(**{f.name: getattr(self, f.name) for f in fields(ParentSettings)})

    def job_spec(self) -> JobSpec:
        return JobSpec(
            model=self.job_model(),
            backend=self.backend,
            precision=self.precision.name,
            tf32=self.precision.tf32,
            batch_size=self.batch_size,
            gpu=replace(self.gpu, usd_per_hour=self.cost.usd_per_hour or self.gpu.usd_per_hour),
            channels_last=self.channels_last,
            smoke=self.smoke,
            measure=self.measure,
            telemetry=self.telemetry,
            plugins=tuple(self.plugins),
        )


def as_settings(options: Any) -> dict[str, Any]:
    """An Options dataclass as the settings dict it came from (sequences as lists, as YAML gives them)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(options).items()}


@dataclass(frozen=True)
class ParentSettings:
    """What the Hydra process needs per job beyond its JobSpec, typed; declared (with defaults) in
    `BenchConfig` and its sections only."""

    tracking: TrackingConfig
    search: SearchConfig
    max_batch: MaxBatchConfig
    report: ReportConfig
    force: bool
    child_start: str
    progress_every_s: float


@dataclass(frozen=True)
class Job:
    """One validated job, as the Hydra process hands it down: what the child measures, what the parent
    does with it, and the composed config as the job ran it (logged as `config.yaml`)."""

    spec: JobSpec
    settings: ParentSettings
    config_yaml: str
    budget_cut_s: float | None = None  # a search's: its timeout is what was left of its row's budget share


ConfigStore.instance().store(name="base_config", node=BenchConfig)


def gpu_count() -> int:
    """The GPUs CUDA can see (NVML, honouring CUDA_VISIBLE_DEVICES), at least 1: `${gpu_count:}` in
    conf/hydra/launcher/gpus.yaml runs that many jobs at once."""
    from src.shared import nvml

    try:
        with nvml.session() as nv:
            return max(1, len(nvml.visible_indices(nv)))
    except nvml.NvmlUnavailable:
        return 1


OmegaConf.register_new_resolver("gpu_count", gpu_count, replace=True)


_GPU_INDICES = re.compile(r"^gpu=(\d+(?:,\d+)*)$")


_OPTION = re.compile(r"^((?:backend|model)\.options\.[\w.]+=)")


def gpu_shorthand(argv: list[str]) -> list[str]:
    """`gpu=1` / `gpu=0,1` (GPU indices, as nvidia-smi numbers them) mean `gpu.index=...`: Hydra reads a bare
    number as an integer, which cannot name a config file of the `gpu` group."""
    return [_GPU_INDICES.sub(r"gpu.index=\1", a) for a in argv]


def shorthands(argv: list[str]) -> list[str]:
    """The command line as Hydra needs it: `gpu_shorthand`, and `backend.options.X=v` / `model.options.X=v`
    set whether or not the group's YAML names the option (`++`): options are declared in their dataclass
    only, so the YAML lists none of them."""
    return [_OPTION.sub(r"++\1", a) for a in gpu_shorthand(argv)]


def own_settings(cfg: DictConfig) -> dict:
    """The composed config without Hydra's node (which needs Hydra's runtime), resolved."""
    own = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    return OmegaConf.to_container(own, resolve=True)  # type: ignore[return-value]


def to_bench_config(cfg: DictConfig) -> BenchConfig:
    """The composed config as validated dataclasses, or ConfigError naming what is allowed."""
    own = own_settings(cfg)
    try:
        typed = OmegaConf.merge(OmegaConf.structured(BenchConfig), own)
    except ConfigKeyError as exc:  # `+foo=1`: Hydra adds keys the schema does not have
        raise ConfigError(unknown_key(str(exc.full_key))) from None
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{exc.full_key}: {str(exc).splitlines()[0]}") from None
    return OmegaConf.to_object(typed)  # type: ignore[return-value]


SECTIONS: dict[str, Any] = {
    "model": ModelConfig,
    "backend": BackendConfig,
    "precision": Precision,
    "gpu": GpuConfig,
    "measure": MeasureConfig,
    "telemetry": TelemetryConfig,
    "tracking": TrackingConfig,
    "report": ReportConfig,
    "search": SearchConfig,
    "cost": CostConfig,
    "max_batch": MaxBatchConfig,
}


def unknown_key(key: str) -> str:
    """`foo` or `measure.foo`: name the keys allowed at that place."""
    section = key.split(".")[0] if "." in key else None
    cls = SECTIONS.get(section, BenchConfig) if section else BenchConfig
    allowed = ", ".join(f.name for f in fields(cls))
    return f"unknown setting '{key}'; allowed at {section or 'the top level'}: {allowed}"


def to_job(cfg: DictConfig) -> Job:
    """Validate a composed config into a Job, or raise ConfigError naming what is allowed."""
    bench = to_bench_config(cfg)
    text = OmegaConf.to_yaml(OmegaConf.create(own_settings(cfg)))
    return Job(bench.job_spec(), bench.parent_settings(), text)


def to_spec(cfg: DictConfig) -> JobSpec:
    """Validate a composed config into a JobSpec, or raise ConfigError naming what is allowed."""
    return to_bench_config(cfg).job_spec()


def beyond_study_rows(cfg: DictConfig) -> bool:
    """A sweep's `batch_index` past this model's study batch sizes: not a cell of the study, so not a job
    (the study preset sweeps as many indices as the model with the most rows has). A single run asking
    for it is refused instead."""
    i = OmegaConf.select(cfg, "batch_index")
    sizes = OmegaConf.select(cfg, "model.study_batch_sizes", default=None) or []
    return isinstance(i, int) and len(sizes) > 0 and i >= len(sizes)


def beyond_max_batch_steps(cfg: DictConfig) -> bool:
    """A max_batch sweep's step past the most its search can take (`MaxBatchConfig.steps`): no job."""
    step = OmegaConf.select(cfg, "max_batch.step", default=None)
    if not isinstance(step, int):
        return False
    try:
        search = MaxBatchConfig(**OmegaConf.to_container(cfg.max_batch))  # type: ignore[arg-type]
    except (ConfigError, TypeError):
        return False  # refused when the job is checked
    return step >= search.steps()


def unsupported_combination(spec: JobSpec) -> str | None:
    """Why the job's backend, by its own declaration, cannot run this precision/layout, or rewrite a layer
    that the model declares it does not hold (`ModelDef.norms`), or None.

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
    norms = MODELS.get(spec.model.name).norms
    for layer, why in cls.rewrites(cls.parse_options(name, spec.backend.options)).items():
        if norms is not None and layer not in norms:
            held = ", ".join(sorted(norms)) or "no normalisation layer"
            allowed = f"allowed: a model with {layer}, or the option off"
            return f"{why} (model '{spec.model.name}' holds {held}); {allowed}"
    return None
