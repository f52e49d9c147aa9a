"""Every job of a basic sweep composed by Hydra and checked, in forks of the Hydra process.

Hydra's composition is single-threaded Python (0.1-0.2 s per job, seconds for a grid), and so is the check
that turns a job's config into its `JobSpec`. Before any job runs, the Hydra process has forks compose and
check the jobs (`src/shared/forks.py`) and meanwhile imports what it needs next (MLflow). A job whose
composition raises, or whose result cannot come back, is composed here again, so that every message is
Hydra's own. Nothing here writes a file or touches the store.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from omegaconf import DictConfig

from src.shared.forks import MISSING, run_forked

Check = Callable[[DictConfig], Any]


def compose_all(
    loader: Any,
    master: DictConfig,
    jobs: Sequence[Sequence[str]],
    check: Check,
    meanwhile: Callable[[], object] = lambda: None,
) -> list[tuple[DictConfig | Exception, Any]]:
    """Per job, in order: its composed config (or the exception composing it raised) and `check(config)`
    (None where composition failed); `meanwhile()` runs in this process as the forks compose."""
    pieces = [partial(_composed, loader, master, job, check) for job in jobs]
    done = run_forked(pieces, meanwhile)
    return [
        compose_one(loader, master, job, check) if got is MISSING else got
        for job, got in zip(jobs, done, strict=True)
    ]


def compose_one(loader: Any, master: DictConfig, job: Sequence[str], check: Check) -> tuple[Any, Any]:
    try:
        cfg = loader.load_sweep_config(master, list(job))
    except Exception as exc:  # a group option that does not exist, a key not in the schema, ...
        return exc, None
    return cfg, check(cfg)


def _composed(loader: Any, master: DictConfig, job: Sequence[str], check: Check) -> tuple[DictConfig, Any]:
    """In a fork: raises where composition fails (the job is then composed at home, for Hydra's message)."""
    cfg = loader.load_sweep_config(master, list(job))
    return cfg, check(cfg)
