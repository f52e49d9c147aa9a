"""Typed results: each kind of result owns its MLflow metric and tag names (units in the names) and the
arithmetic that derives them. Writers call `.metrics()` / `.tags()`; readers (the sweep summary, the report,
`scripts/runs_table.py`) take names from the `Names` declared here, so a misspelt name fails loudly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace

from src.shared.errors import Status


class Names:
    """A fixed set of metric or tag names: `NAMES.throughput_img_s` is "throughput_img_s"; a name that
    is not declared raises AttributeError instead of reading a column that never exists."""

    def __init__(self, *names: str) -> None:
        self._names = frozenset(names)

    def __getattr__(self, name: str) -> str:
        if name.startswith("_") or name not in self._names:
            raise AttributeError(f"no metric or tag named {name!r}")
        return name


def names_of(cls: type, *extra: str) -> Names:
    return Names(*(f.name for f in fields(cls)), *extra)


@dataclass(frozen=True)
class LatencyStats:
    """The timed loop, summarised (`src/child/measure.py`)."""

    throughput_img_s: float  # batch size / mean latency
    latency_mean_ms: float
    latency_p50_ms: float
    latency_p90_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    latency_std_ms: float
    latency_cov_pct: float  # coefficient of variation, 100 * std / mean
    iterations: int
    window_s: float
    throughput_window_img_s: float  # batch * iterations / window wall time
    repeats: int = 1  # timed windows
    throughput_spread_pct: float = 0.0  # 100 * (max - min) / median of the windows' throughputs
    warmup_calls: int = 0  # untimed calls made before the timed loop (after the first call)
    warmup_s: float = 0.0  # the warm-up calls' wall time
    ci_half_width_pct: float = 0.0  # 95% confidence half-width of the mean latency, % of the mean
    cpu_probe_before_ms: float = 0.0  # the host CPU probe right before the timed loop (lower: faster)
    cpu_probe_after_ms: float = 0.0  # and right after it

    def metrics(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}

    to_dict = metrics


LATENCY = names_of(LatencyStats)
STOP = Names("stop_rule", "stop_reason")  # tags: the measurement rule with its figures, and why it ended


@dataclass(frozen=True)
class EnergyWindow:
    """One timed window's energy: the counter read at its synchronised edges (in the child), idle power read
    before the job (in the Hydra process). Every energy figure is derived here, and only here."""

    images: int
    window_s: float
    start_unix: float
    end_unix: float
    joules: float | None = None  # None: no counter, or it did not advance (`status` says why)
    status: str = "measured"
    source: str = ""
    idle_power_w: float | None = None

    def metrics(self) -> dict[str, float]:
        m = {ENERGY.window_start_unix: self.start_unix, ENERGY.window_end_unix: self.end_unix}
        if self.idle_power_w is not None:
            m[ENERGY.idle_power_w] = self.idle_power_w
        if self.joules is None:
            return m
        m[ENERGY.energy_j] = self.joules
        m[ENERGY.energy_j_per_img] = self.joules / self.images
        m[ENERGY.power_mean_w] = self.joules / self.window_s
        m[ENERGY.img_per_j] = self.images / self.joules
        if self.idle_power_w is not None:
            net = self.joules - self.idle_power_w * self.window_s
            m[ENERGY.energy_net_j], m[ENERGY.energy_net_j_per_img] = net, net / self.images
        return m

    def tags(self) -> dict[str, str]:
        tags = {ENERGY.energy_status: self.status}
        return {**tags, ENERGY.energy_source: self.source} if self.source else tags

    def with_idle(self, idle_power_w: float | None) -> EnergyWindow:
        return replace(self, idle_power_w=idle_power_w)

    @classmethod
    def from_logged(
        cls, metrics: dict[str, float], tags: dict[str, str], batch_size: int
    ) -> EnergyWindow | None:
        """The window as the child reported it (None when the job never finished its timed window)."""
        if ENERGY.window_start_unix not in metrics or LATENCY.iterations not in metrics:
            return None
        return cls(
            images=int(metrics[LATENCY.iterations]) * batch_size,
            window_s=metrics[LATENCY.window_s],
            start_unix=metrics[ENERGY.window_start_unix],
            end_unix=metrics[ENERGY.window_end_unix],
            joules=metrics.get(ENERGY.energy_j),
            status=tags.get(ENERGY.energy_status, ""),
            source=tags.get(ENERGY.energy_source, ""),
        )


ENERGY = Names(
    "window_start_unix",
    "window_end_unix",
    "idle_power_w",
    "idle_power_age_s",
    "energy_j",
    "energy_j_per_img",
    "power_mean_w",
    "img_per_j",
    "energy_net_j",
    "energy_net_j_per_img",
    "energy_status",
    "energy_source",
)


@dataclass(frozen=True)
class Nameplate:
    """Images/s per nameplate watt, as the study computes it."""

    watts: float | None
    source: str
    throughput_img_s: float = 0.0

    def metrics(self) -> dict[str, float]:
        if not self.watts:
            return {}
        per_watt = self.throughput_img_s / self.watts
        return {NAMEPLATE.nameplate_w: self.watts, NAMEPLATE.img_per_s_per_nameplate_w: per_watt}

    def tags(self) -> dict[str, str]:
        return {NAMEPLATE.nameplate_source: self.source}


NAMEPLATE = Names("nameplate_w", "img_per_s_per_nameplate_w", "nameplate_source")


@dataclass(frozen=True)
class Compute:
    """How much of the card the timed loop used: floating-point operations per image (counted once per
    model and input shape by `torch.utils.flop_counter`; a multiply-add counts 2) times images/s, against
    the card's dense peak for the job's arithmetic (`src/shared/peaks.py`; none for an unlisted card)."""

    gflop_per_image: float
    throughput_img_s: float
    peak_tflops: float | None = None
    peak_source: str = ""

    @property
    def achieved_tflops(self) -> float:
        return self.gflop_per_image * self.throughput_img_s / 1e3

    def metrics(self) -> dict[str, float]:
        m = {COMPUTE.gflop_per_image: self.gflop_per_image, COMPUTE.achieved_tflops: self.achieved_tflops}
        if self.peak_tflops:
            m[COMPUTE.peak_tflops] = self.peak_tflops
            m[COMPUTE.peak_used_pct] = 100.0 * self.achieved_tflops / self.peak_tflops
        return m

    def tags(self) -> dict[str, str]:
        return {COMPUTE.peak_source: self.peak_source or "no peak known for this device"}


@dataclass(frozen=True)
class Cost:
    """What a million images cost on a card rented by the hour (`cost.usd_per_hour` or the GPU preset's)."""

    usd_per_hour: float
    throughput_img_s: float

    def metrics(self) -> dict[str, float]:
        per_million = self.usd_per_hour / 3600 / self.throughput_img_s * 1e6 if self.throughput_img_s else 0.0
        return {COST.usd_per_hour: self.usd_per_hour, COST.usd_per_million_images: per_million}


COST = Names("usd_per_hour", "usd_per_million_images")
COMPUTE = Names("gflop_per_image", "achieved_tflops", "peak_tflops", "peak_used_pct", "peak_source")
KINDS = ("conv_matmul", "norm_pointwise", "copy_cat", "other")  # where the device's time goes, by kind


@dataclass(frozen=True)
class TimeShares:
    """Where the time of a short profiled window after the timed one goes (`src/child/profile.py`): the
    share of the device's busy time per kind of kernel (`KINDS`), and the window's idle share (no kernel
    running; on a CPU, time outside the operators)."""

    busy_ms: dict[str, float]  # kernel time by kind, summed over the window
    window_ms: float  # the profiled window: first kernel's start to last kernel's end
    kernels: int  # kernels (operators on a CPU) seen

    def metrics(self) -> dict[str, float]:
        total = sum(self.busy_ms.values())
        m = {f"time_{k}_pct": 100.0 * self.busy_ms.get(k, 0.0) / total if total else 0.0 for k in KINDS}
        busy = min(total, self.window_ms)
        m[PROFILE.idle_pct] = 100.0 * (1 - busy / self.window_ms) if self.window_ms > 0 else 0.0
        m[PROFILE.profile_window_ms] = self.window_ms
        m[PROFILE.profile_kernels] = float(self.kernels)
        return m


PROFILE = Names(*(f"time_{k}_pct" for k in KINDS), "idle_pct", "profile_window_ms", "profile_kernels")


@dataclass(frozen=True)
class TraceSummary:
    """The sampled power/clock trace, cut to the timed window (`src/parent/telemetry.py`)."""

    trace_samples: float
    power_peak_w: float
    power_trace_mean_w: float
    gpu_util_mean_pct: float
    sm_clock_mean_mhz: float
    sm_clock_min_mhz: float
    mem_clock_mean_mhz: float
    temperature_max_c: float
    mem_used_max_mib: float

    def metrics(self) -> dict[str, float]:
        return asdict(self)


TRACE = names_of(
    TraceSummary,
    "trace_power_source",
    "trace_error",
    "trace_status",
    "clock_event_reasons",
    "other_gpu_processes",
)


@dataclass(frozen=True)
class Parity:
    """The backend's output against the eager fp32 model's (`src/child/parity.py`)."""

    max_abs_err: float
    rel_l2_err: float
    cosine: float
    tolerance_rel_l2: float
    arithmetic: str

    @property
    def passed(self) -> bool:
        return self.rel_l2_err <= self.tolerance_rel_l2

    def metrics(self) -> dict[str, float]:
        return {
            PARITY.parity_max_abs_err: self.max_abs_err,
            PARITY.parity_rel_l2_err: self.rel_l2_err,
            PARITY.parity_cosine: self.cosine,
            PARITY.parity_tolerance_rel_l2: self.tolerance_rel_l2,
        }

    def tags(self) -> dict[str, str]:
        return {PARITY.parity: "pass" if self.passed else "fail", PARITY.parity_arithmetic: self.arithmetic}


PARITY = Names(
    "parity_max_abs_err",
    "parity_rel_l2_err",
    "parity_cosine",
    "parity_tolerance_rel_l2",
    "parity",
    "parity_arithmetic",
    "parity_error",
)


def slowdown_pct(times: tuple[float, ...] | list[float]) -> float:
    """How much the slowest of these times is above the fastest, in % of the fastest (0 without a positive
    fastest): the host CPU probes' change across a window, or between two runs."""
    if not times or min(times) <= 0:
        return 0.0
    return 100.0 * (max(times) / min(times) - 1.0)


def cpu_probes(metrics: Mapping[str, float]) -> tuple[float, float] | None:
    """A run's host CPU probes, before and after its timed loop (ms; lower is faster); None if not logged."""
    if LATENCY.cpu_probe_before_ms not in metrics:
        return None
    return metrics[LATENCY.cpu_probe_before_ms], metrics[LATENCY.cpu_probe_after_ms]


@dataclass(frozen=True)
class Stability:
    """Whether an ok run's figure can be trusted as one number (docs/metrics.md, "Stable"): its timed
    windows agree within SPREAD_PCT, its iterations within COV_PCT, the GPU was busy for at least
    GPU_BUSY_PCT of the window (less: launch-bound, the host sets the pace), and the host CPU's speed
    (the probe before and after the timed loop) changed by at most CPU_CHANGE_PCT. Smoke runs are never
    stable."""

    SPREAD_PCT = 5.0
    COV_PCT = 10.0
    GPU_BUSY_PCT = 80.0
    CPU_CHANGE_PCT = 25.0

    spread_pct: float
    cov_pct: float
    gpu_busy_pct: float | None = None  # None: no trace (the CPU, NVML missing, sampling off)
    smoke: bool = False
    cpu_probe_ms: tuple[float, float] | None = None  # before and after the timed loop; None: not read

    @property
    def cpu_change_pct(self) -> float:
        """How much slower the host CPU was at the slower of the two probes, in % of the faster."""
        return slowdown_pct(self.cpu_probe_ms or ())

    def reasons(self) -> list[str]:
        why = []
        if self.smoke:
            why.append("smoke run (tiny input)")
        if self.spread_pct > self.SPREAD_PCT:
            why.append(f"windows spread {self.spread_pct:.1f}% > {self.SPREAD_PCT:g}%")
        if self.cov_pct > self.COV_PCT:
            why.append(f"latency CoV {self.cov_pct:.1f}% > {self.COV_PCT:g}%")
        if self.gpu_busy_pct is not None and self.gpu_busy_pct < self.GPU_BUSY_PCT:
            why.append(f"GPU busy {self.gpu_busy_pct:.0f}% < {self.GPU_BUSY_PCT:g}% (launch-bound)")
        if self.cpu_change_pct > self.CPU_CHANGE_PCT:
            before, after = self.cpu_probe_ms or (0.0, 0.0)
            why.append(
                f"host CPU speed changed {self.cpu_change_pct:.0f}% > {self.CPU_CHANGE_PCT:g}% across the "
                f"window (probe {before:.2f} -> {after:.2f} ms)"
            )
        return why

    def tags(self) -> dict[str, str]:
        why = self.reasons()
        tags = {STABLE.stable: "false" if why else "true"}
        return {**tags, STABLE.unstable_reason: "; ".join(why)} if why else tags


STABLE = Names("stable", "unstable_reason")


# What every job logs about itself, beside the results above (who writes each: docs/metrics.md).
JOB = Names(
    "model_load_s",  # build the model, move it to device and precision, make the inputs
    "parity_reference_s",
    "build_time_s",  # the backend's preparation (compile, trace, capture, ...)
    "first_call_ms",
    "child_start_s",  # launcher asks -> the child's code runs (the template's fork, or a new interpreter)
    "setup_s",  # the child's code runs -> its model is built (fresh: torch's import; CUDA init, checks)
    "peak_rss_mib",
    "peak_mem_allocated_mib",
    "peak_mem_reserved_mib",
    "artifact_size_mib",
    "lock_wait_s",
    "job_wall_s",
    # tags
    "status",
    "reason",
    "phase",
    "kind",
    "config_key",
    "task",
    "gpu_name",
    "device",
    "child_exit_code",
    "child_exit",
    "child_start",  # template (forked by the template process) or fresh (a new interpreter), with why
    "artifact_files",
    "measured_in",  # a skipped job's link: the run that holds its figures
    "pid",  # the Hydra process that opened the run (runs it left RUNNING are ended by the next sweep)
)
LINK = "link"  # JOB.kind of a skipped job's run: its figures are those of the run named by `measured_in`


@dataclass
class JobResult:
    """Everything one job produced, as the Hydra process logs it: exactly one per job."""

    status: Status
    reason: str = ""
    phase: str = ""  # the last phase the child entered
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    exit_code: int | None = None
    wall_s: float = 0.0
    pid: int | None = None  # the measuring child's

    def run_tags(self) -> dict[str, str]:
        tags = {**self.tags, JOB.status: self.status.value, JOB.phase: self.phase}
        if self.reason:
            tags[JOB.reason] = self.reason
        if self.exit_code is not None:
            tags[JOB.child_exit_code] = str(self.exit_code)
        return tags

    def run_metrics(self) -> dict[str, float]:
        return {**self.metrics, JOB.job_wall_s: self.wall_s}

    def to_record(self) -> dict:
        return {**asdict(self), "status": self.status.value}

    @classmethod
    def from_record(cls, record: dict) -> JobResult:
        return cls(**{**record, "status": Status(record["status"])})
