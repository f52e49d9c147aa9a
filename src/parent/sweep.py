"""A sweep as a whole, in the Hydra process: every job's config checked before anything runs, and the
summary table printed at its end (read back from MLflow)."""

from __future__ import annotations

import logging
import sys
from collections import Counter
from pathlib import Path
from typing import Any, NoReturn

from omegaconf import DictConfig, OmegaConf

from src.parent import early, preflight
from src.parent.config import (
    beyond_max_batch_steps,
    beyond_study_rows,
    to_spec,
    unsupported_combination,
)
from src.shared.errors import ConfigError
from src.shared.results import JOB, LATENCY, STABLE

log = logging.getLogger(__name__)
FAILED_EXIT = 3  # the exit status when any job ended `failed` or `timeout` (README, "Exit codes")
REFUSED_EXIT = 2  # bad input: nothing was run
PENDING_EXIT = 4  # results wait on disk for `python -m src.upload` (the tracking server was unreachable)
_statuses: Counter[str] = Counter()  # the jobs' statuses in this process (a sweep's: read back from MLflow)
_pending = [0]  # results this invocation left on disk
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
SEARCH_SWEEPER = "hydra_plugins.bench_search.search_sweeper.SearchSweeper"  # the basic one's grid, reordered


def basic_sweep_grid(config: DictConfig) -> list[list[str]] | None:
    """Every job's overrides, in order, as Hydra's basic sweeper will expand them (its sweeper params,
    then the command line's), or None under another sweeper. Hydra has no public way to do this: it is
    the basic sweeper's own `split_arguments` (`hydra._internal`), which tests/test_config.py checks
    against the sweeper's real jobs, so that a change in Hydra fails there, not in a user's sweep."""
    if config.hydra.sweeper.get("_target_") not in (BASIC_SWEEPER, SEARCH_SWEEPER):
        return None
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    loader = GlobalHydra.instance().config_loader()
    params = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
    overrides = OverridesParser.create(config_loader=loader).parse_overrides(
        [*params, *config.hydra.overrides.task]
    )
    return [list(job) for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]


def sweep_configs(config: DictConfig) -> list[tuple[list[str], DictConfig | Exception]]:
    """Every job's composed config (or the exception composing it raised), as the basic sweeper's jobs
    will be composed. Under another sweeper this returns none and each job validates itself as it starts
    (`src/bench.py`), refusing bad input with the same message and exit status."""
    jobs = basic_sweep_grid(config)
    if jobs is None:
        log.info(
            "sweeper %s: each job's config is checked as the job starts", config.hydra.sweeper.get("_target_")
        )
        return []
    from hydra.core.global_hydra import GlobalHydra

    loader = GlobalHydra.instance().config_loader()
    composed: list[tuple[list[str], DictConfig | Exception]] = []
    for job in jobs:
        try:
            composed.append((job, loader.load_sweep_config(config, job)))
        except Exception as exc:  # a group option that does not exist, a key not in the schema, ...
            composed.append((job, exc))
    return composed


def _verdict(cfg: DictConfig, single: bool = False) -> tuple[str, Any]:
    """A composed job's check: ('absent', None): in a sweep, not a cell of the study; ('refused', why);
    ('job', its JobSpec)."""
    try:
        if not single and (beyond_study_rows(cfg) or beyond_max_batch_steps(cfg)):
            return "absent", None
        if single and OmegaConf.select(cfg, "max_batch.step", default=None) is not None:
            return "refused", (
                "max_batch.step is a step of +experiment=max_batch's sweep; allowed: "
                "python -m src.bench +experiment=max_batch model=... (a single run takes batch_size)"
            )
        return "job", to_spec(cfg)
    except ConfigError as exc:
        return "refused", str(exc)


def validate_or_exit(jobs: list[tuple[list[str], Any]], single: bool = False) -> dict[int, Any]:
    """Exit 2 on bad input, else return the jobs that will run: their JobSpecs by position (Hydra's job
    number).
    A combination a backend declares it cannot run is bad input for a single run; in a sweep it becomes
    that job's `unsupported` result (listed here, recorded when the job runs). In a sweep, a
    `batch_index` past a model's study batch sizes is no job at all (`beyond_study_rows`)."""
    problems: dict[str, list[str]] = {}
    refused: Counter[str] = Counter()
    absent = 0
    real = {}
    for number, (overrides, cfg) in enumerate(jobs):
        if isinstance(cfg, Exception):
            kind, found = "refused", _hydra_message(cfg)
        else:
            kind, found = _verdict(cfg, single)
        if kind == "absent":
            absent += 1
            continue
        why = found
        if kind == "job":
            real[number] = found
            why = unsupported_combination(found)
            if single and not why:  # alone, what cannot run is bad input (a sweep records a result)
                why = early.refusal(found)
            if why and not single:
                refused[why] += 1
                continue
        if why:
            problems.setdefault(why, []).append(" ".join(overrides) or "(defaults)")
    for why, n in refused.items():
        log.warning("%d job(s) of this sweep will be recorded as unsupported: %s", n, why)
    if problems:
        refuse(problems, len(jobs))
    if absent:
        log.info(
            "%d combination(s) name a batch_index past their model's study_batch_sizes, or a max_batch "
            "step past the most its search takes: not run",
            absent,
        )
    return real


def check_surroundings(config: DictConfig, output_dir: Path) -> None:
    """The store and the output folder (`src/parent/preflight.py`), before any run or folder exists."""
    found = preflight.problems(config.tracking.uri, [output_dir])
    if found:
        refuse({p: [] for p in found}, jobs=1, what="the store or the output folder cannot be used")


def refuse(problems: dict[str, list[str]], jobs: int, what: str = "invalid configuration") -> NoReturn:
    """Print one message naming each problem (and, in a sweep, which jobs have it); exit with status 2."""
    lines = [f"error: {what}, nothing was run:"]
    for message, where in problems.items():
        lines.append(f"  - {message}")
        if jobs > 1:
            lines.append(f"    in {len(where)} of {jobs} jobs, e.g. {where[0]}")
    print("\n".join(lines), file=sys.stderr)
    raise SystemExit(REFUSED_EXIT)


def _hydra_message(exc: Exception) -> str:
    """Hydra's composition error on one line, options comma-separated, without its search-path listing."""
    lines = [p.strip() for p in str(exc).split("Config search path:")[0].splitlines() if p.strip()]
    for i, line in enumerate(lines):
        if line.startswith("Available options"):
            return " ".join(lines[:i]) + f". {line} {', '.join(lines[i + 1 :])}"
    return " ".join(lines)


def note_statuses(statuses: Counter[str] | list[str], replace: bool = False) -> None:
    """Record job statuses for the exit status: each job in-process, or a sweep's all at once."""
    if replace:
        _statuses.clear()
    _statuses.update(statuses)


def note_pending(count: int) -> None:
    """Results of this invocation that could only be kept on disk."""
    _pending[0] = count


def pending_line(count: int, folder: Path) -> str:
    """The last line of a sweep or run that left results on disk (`count` 0: only the sweep's own run
    could not be brought up to date)."""
    what = (
        f"{count} result(s) could not reach the tracking store and wait on disk"
        if count
        else "the sweep's run could not be brought up to date in the tracking store"
    )
    return f"{what}: send it with `python -m src.upload {folder}`"


def exit_code() -> int:
    """0: every job ended with a result (ok, oom, unsupported, unavailable, skipped) logged to MLflow;
    PENDING_EXIT: results wait on disk for `src.upload` (whatever their statuses); FAILED_EXIT: any job
    ended failed or timeout."""
    if _pending[0]:
        return PENDING_EXIT
    return FAILED_EXIT if _statuses["failed"] or _statuses["timeout"] else 0


def _stability(run: Any) -> str:
    """`yes`, `NO (why)`, or `-` (no figure); smoke runs say so."""
    tags = run.data.tags
    smoke = " SMOKE" if run.data.params.get("smoke") == "true" else ""
    if tags.get(STABLE.stable) == "true":
        return "yes" + smoke
    if tags.get(STABLE.stable) == "false":
        reasons = tags.get(STABLE.unstable_reason, "").replace("smoke run (tiny input)", "").strip("; ")
        return "NO" + smoke + (f" ({reasons[:60]})" if reasons else "")
    return "-" + smoke


def summary_table(runs: list, linked: dict[str, dict[str, float]] | None = None) -> str:
    """One line per job; a skipped job shows the figures of the run it links to (`linked`: id -> metrics)."""
    rows = [("run", "status", "img/s", "p99 ms", "stable", "reason")]
    for r in sorted(runs, key=lambda r: r.info.start_time or 0):
        m, t = r.data.metrics, r.data.tags
        if t.get(JOB.measured_in) in (linked or {}):
            m = linked[t[JOB.measured_in]]  # type: ignore[index]
        ok = t.get(JOB.status) in ("ok", "skipped")
        img_s, p99 = m.get(LATENCY.throughput_img_s), m.get(LATENCY.latency_p99_ms)
        rows.append(
            (
                r.info.run_name or r.info.run_id,
                t.get(JOB.status, "?"),
                f"{img_s:.1f}" if ok and img_s is not None else "-",
                f"{p99:.2f}" if ok and p99 is not None else "-",
                _stability(r),
                (t.get(JOB.reason, "").splitlines() or [""])[0][:80],
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows)
