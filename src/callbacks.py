"""Hydra callback: refuse bad input before anything runs, and group a sweep's runs under one parent run.

- `on_run_start` / `on_multirun_start` validate every job of the invocation (a sweep's jobs are composed
  the way Hydra's basic sweeper will compose them) before Hydra creates an output folder or MLflow sees
  anything. Bad input exits with status 2 and one message listing each problem and what is allowed.
- `on_multirun_start` then creates the MLflow store and experiment once (SQLite table creation is not safe
  from several processes at once) and the sweep's parent run, unless `mlflow run` already made one.
- `on_multirun_end` prints the sweep's results, read back from MLflow, and ends the parent run. A sweep
  stopped early (Ctrl-C, SIGTERM) ends on the way out: job runs left RUNNING (a parallel launcher's workers
  are killed with it) as failed, interrupted; then its own parent run as KILLED.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from src import pending, tracking
from src.config import to_spec, unsupported_combination
from src.errors import ConfigError
from src.runner import PARENT_ENV, PARENT_FILE

log = logging.getLogger(__name__)
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
LOCAL_LAUNCHERS = ("BasicLauncher", "JoblibLauncher")


class BenchCallback(Callback):
    def __init__(self) -> None:
        self._own_parent: str | None = None
        self._parent: str | None = None  # until the sweep ends normally
        self._client: Any = None

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _validate_or_exit([([], config)], single=True)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _validate_or_exit(sweep_configs(config))
        self._client = tracking.open_client(tracking.tracking_uri(config.tracking.uri))
        parent = os.environ.get(PARENT_ENV)
        if parent:  # made by `mlflow run`: jobs hang under it; `mlflow run` ends it
            tracking.experiment_id(self._client, None, parent)
        else:
            exp_id = tracking.experiment_id(self._client, config.tracking.experiment)
            tags = {
                "kind": "sweep",
                "sweep_overrides": " ".join(config.hydra.overrides.task),
                "sweep_dir": str(Path(config.hydra.sweep.dir).resolve()),
            }
            parent = tracking.start_run(
                self._client, exp_id, f"sweep-{time.strftime('%Y%m%d-%H%M%S')}", None, tags
            )
            self._own_parent = parent
        # jobs that die with this process (the basic launcher's, joblib's workers); a cluster's keep running
        local = any(name in str(config.hydra.launcher.get("_target_")) for name in LOCAL_LAUNCHERS)
        self._parent = parent if local else None
        atexit.register(self._stopped)
        os.environ[PARENT_ENV] = parent
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / PARENT_FILE).write_text(parent)
        log.info("MLflow: sweep runs go under parent run %s at %s", parent, self._client.tracking_uri)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._parent = None  # every job ended by itself
        parent = os.environ.get(PARENT_ENV)
        if not parent or self._client is None:
            return
        try:
            self._summarise(parent)
        except Exception as exc:  # the tracking server went away: the jobs' results are kept on disk
            log.warning("could not read the sweep back from MLflow (%s: %s)", type(exc).__name__, exc)
            if self._own_parent:
                sweep_dir = Path(config.hydra.sweep.dir)
                pending.save_parent(sweep_dir, self._client.tracking_uri, self._own_parent, "FINISHED")
                log.warning("the sweep's results wait on disk: `python -m src.upload %s`", sweep_dir)
                self._own_parent = None  # ended by the upload, not as KILLED on the way out

    def _summarise(self, parent: str) -> None:
        runs = tracking.children(self._client, parent)
        counts = Counter(r.data.tags.get("status", "unknown") for r in runs)
        tracking.log_all(self._client, parent, tags={f"jobs_{k}": str(v) for k, v in counts.items()})
        print(summary_table(runs), file=sys.stderr)
        self._end_parent("FINISHED")

    def _stopped(self) -> None:
        """At exit, for a sweep that never reached on_multirun_end. A SLURM sweep's jobs run on and end
        their runs themselves."""
        if self._client is not None and self._parent is not None:
            try:
                closed = tracking.close_interrupted(self._client, self._parent)
                if closed:
                    log.warning("sweep stopped: %d running job run(s) ended as failed (interrupted)", closed)
            except Exception as exc:  # the tracking server is gone: those runs stay RUNNING there
                log.warning("could not close the stopped sweep's job runs (%s: %s)", type(exc).__name__, exc)
        self._end_parent("KILLED")

    def _end_parent(self, status: str) -> None:
        if self._own_parent and self._client is not None:
            self._client.set_terminated(self._own_parent, status)
            self._own_parent = None


def sweep_configs(config: DictConfig) -> list[tuple[list[str], DictConfig]]:
    """Every job's composed config, as the basic sweeper will compose it (other sweepers: none)."""
    if config.hydra.sweeper.get("_target_") != BASIC_SWEEPER:
        return []
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    loader = GlobalHydra.instance().config_loader()
    params = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
    overrides = OverridesParser.create(config_loader=loader).parse_overrides(
        [*params, *config.hydra.overrides.task]
    )
    jobs = [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]
    composed = []
    for job in jobs:
        try:
            composed.append((job, loader.load_sweep_config(config, list(job))))
        except Exception as exc:  # a group option that does not exist, a key not in the schema, ...
            composed.append((job, exc))
    return composed


def _validate_or_exit(jobs: list[tuple[list[str], Any]], single: bool = False) -> None:
    """Exit 2 on bad input. A combination a backend declares it cannot run is bad input for a single run;
    in a sweep it becomes that job's `unsupported` result (listed here, recorded when the job runs)."""
    problems: dict[str, list[str]] = {}
    refused: Counter[str] = Counter()
    for overrides, cfg in jobs:
        try:
            if isinstance(cfg, Exception):
                raise ConfigError(_hydra_message(cfg))
            why = unsupported_combination(to_spec(cfg))
            if why and single:
                raise ConfigError(why)
            if why:
                refused[why] += 1
        except ConfigError as exc:
            problems.setdefault(str(exc), []).append(" ".join(overrides) or "(defaults)")
    for why, n in refused.items():
        log.warning("%d job(s) of this sweep will be recorded as unsupported: %s", n, why)
    if not problems:
        return
    lines = ["error: invalid configuration, nothing was run:"]
    for message, where in problems.items():
        lines.append(f"  - {message}")
        if len(jobs) > 1:
            lines.append(f"    in {len(where)} of {len(jobs)} jobs, e.g. {where[0]}")
    print("\n".join(lines), file=sys.stderr)
    raise SystemExit(2)


def _hydra_message(exc: Exception) -> str:
    """Hydra's composition error on one line, options comma-separated, without its search-path listing."""
    lines = [p.strip() for p in str(exc).split("Config search path:")[0].splitlines() if p.strip()]
    for i, line in enumerate(lines):
        if line.startswith("Available options"):
            return " ".join(lines[:i]) + f". {line} {', '.join(lines[i + 1 :])}"
    return " ".join(lines)


def summary_table(runs: list) -> str:
    rows = [("run", "status", "img/s", "p99 ms", "reason")]
    for r in sorted(runs, key=lambda r: r.info.start_time or 0):
        m, t = r.data.metrics, r.data.tags
        ok = t.get("status") == "ok"
        rows.append(
            (
                r.info.run_name or r.info.run_id,
                t.get("status", "?"),
                f"{m['throughput_img_s']:.1f}" if ok and "throughput_img_s" in m else "-",
                f"{m['latency_p99_ms']:.2f}" if ok and "latency_p99_ms" in m else "-",
                (t.get("reason", "").splitlines() or [""])[0][:80],
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows)
