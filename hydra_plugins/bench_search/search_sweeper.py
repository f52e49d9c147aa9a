"""The search preset's sweeper (`conf/experiment/best.yaml`): Hydra's basic sweeper, whose grid it keeps,
launching one study row at a time with the row's candidates in the order its neighbours' winners suggest
(`src/parent/order.py`). A Hydra plugin lives in the `hydra_plugins` package: this is that package's thin
adapter; the order's rules are in `src`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from omegaconf import OmegaConf

from src.parent import order

log = logging.getLogger(__name__)


class SearchSweeper(BasicSweeper):
    def sweep(self, arguments: list[str]) -> Any:
        from src.parent.sweep import basic_sweep_grid  # the grid the callback checked, job for job

        assert self.config is not None and self.launcher is not None
        jobs = basic_sweep_grid(self.config)
        assert jobs is not None, "the search sweeper's grid is the basic sweeper's"
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        self.validate_batch_is_legal(jobs)
        done: list[order.Row] = []
        won: dict[tuple[str, ...], str] = {}
        returns = []
        for row in order.rows(jobs):
            winners = [won[r.key] for r in order.neighbours(row, done) if r.key in won]
            batch = order.ordered(row, winners)
            if winners:
                where = f"model={row.value('model')} batch_index={row.value('batch_index')}"
                log.info("%s: candidate %s tried first, the winner at its neighbours", where, winners[0])
            results = self.launcher.launch(batch, initial_job_idx=row.start)
            for r in results:
                _ = r.return_value  # a job that raised fails the sweep here, as in the basic sweeper
            best = max(
                (r for r in results if isinstance(r.return_value, dict) and r.return_value.get("img_s")),
                key=lambda r: r.return_value["img_s"],
                default=None,
            )
            if best is not None:
                won[row.key] = order.candidate(list(best.overrides)) or ""
            done.append(row)
            returns.append(results)
        return returns
